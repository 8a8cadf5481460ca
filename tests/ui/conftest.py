"""UI fixtures: Debian's Chromium driven by Playwright, in front of the API test stack (the real
API server, worker, PostgreSQL, Temporal test server, scripted model and sandboxes).

A failed test leaves a screenshot of each of its pages in .qai/ui-screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.api.conftest import api_stack  # noqa: F401  (the UI tests drive the API's stack)
from tests.workflows.conftest import (  # noqa: F401  (fixtures api_stack needs)
    agent_harness,
    template_ready,
    workflow_env,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / ".qai" / "ui-screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[_failed] = True


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("the UI tests need Debian's chromium (make setup installs it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def new_page(
    browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Page]]]:
    """A factory of pages (each in its own context): `page = await new_page(base_url)`."""
    contexts: list[BrowserContext] = []

    async def make(base_url: str, width: int = 1280, height: int = 800) -> Page:
        context = await browser.new_context(
            base_url=base_url,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        contexts.append(context)
        return await context.new_page()

    try:
        yield make
    finally:
        if request.node.stash.get(_failed, False):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            number = 0
            for context in contexts:
                for page in context.pages:
                    number += 1
                    path = SCREENSHOTS / f"{name}-{number}.png"
                    try:
                        await page.screenshot(path=str(path), full_page=True)
                        print(f"screenshot: {path}")
                    except Exception as error:  # a crashed page: report, keep the failure
                        print(f"no screenshot of page {number}: {error}")
        for context in contexts:
            await context.close()
