"""The web UI's headline figure: seconds from clicking "Create" to the preview showing the app.

    .venv/bin/python benchmarks/ui_bench.py --runs 3 [--screenshots DIR]

Drives Debian's Chromium (Playwright, executable_path) against the real API, worker, embedded
PostgreSQL, Temporal's test server and a real sandbox, with the bundled scripted model
(scripted_llm/scripts/demo.json, the todo app). Each run is a new project: a new sandbox from
the cached template, then the dev server's first compile of the page. Prints every run and
the median. With --screenshots, also saves pages at 1280x800 and 400 px wide (an extra,
untimed project shows a run in progress).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright, expect  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from api.server import running_api  # noqa: E402
from runtime.temporal import ensure_search_attributes  # noqa: E402
from sandboxes.template import ensure_template  # noqa: E402
from scripted_llm import scripted_llm_server  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.workflows.conftest import TEST_SERVER, running_worker, settings_for  # noqa: E402

DEMO = ROOT / "scripted_llm" / "scripts" / "demo.json"
PROMPT = "Build a todo app: add tasks, mark them done, delete them, and filter them."


async def main(runs: int, screenshots: Path | None) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="qai-ui-bench-"))
    data_dir.chmod(0o711)
    postgres = EmbeddedPostgres(data_dir, durable=False)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    figures: list[float] = []
    try:
        await ensure_search_attributes(env.client)
        url = await postgres.start()
        await upgrade(url)
        async with scripted_llm_server(DEMO) as llm:
            ensure_template(settings_for(llm.base_url))
            async with running_worker(env, url, llm.base_url) as harness:
                settings = harness.settings.model_copy(
                    update={"qai_task_queue": harness.task_queue, "qai_api_port": 0}
                )
                async with running_api(settings, url, env.client) as base, async_playwright() as pw:
                    browser = await pw.chromium.launch(
                        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                    )
                    page = await browser.new_page(
                        base_url=base, viewport={"width": 1280, "height": 800}
                    )
                    try:
                        for run in range(1, runs + 1):
                            await page.goto("/")
                            await page.get_by_label("Describe your app").fill(PROMPT)
                            started = time.perf_counter()
                            await page.get_by_role("button", name="Create").click()
                            app = page.frame_locator("#preview").get_by_text("Tasks", exact=True)
                            await expect(app).to_be_visible(timeout=300_000)
                            figures.append(time.perf_counter() - started)
                            print(f"run {run}: Create -> preview {figures[-1]:.1f} s", flush=True)
                        if screenshots is not None:
                            await save_screenshots(page, screenshots)
                    finally:
                        await browser.close()
                        await harness.services.sandboxes.kill_owned()
    finally:
        await env.shutdown()
        await postgres.stop()
    print(f"Create -> preview showing the app: median {statistics.median(figures):.1f} s")


async def save_screenshots(page, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    await page.wait_for_timeout(1500)  # let the preview finish painting
    finished = page.url
    await page.goto("/")  # one more, untimed project, to show a run in progress
    await page.get_by_label("Describe your app").fill(PROMPT)
    await page.get_by_role("button", name="Create").click()
    await page.locator("#running .iteration").wait_for(timeout=120_000)
    await page.wait_for_timeout(1500)
    await page.screenshot(path=str(folder / "ui-running-1280.png"))
    await page.goto(finished)
    await page.frame_locator("#preview").get_by_text("Tasks", exact=True).wait_for()
    await page.wait_for_timeout(1500)
    await page.screenshot(path=str(folder / "ui-project-1280.png"))
    await page.set_viewport_size({"width": 400, "height": 800})
    await page.wait_for_timeout(500)
    await page.screenshot(path=str(folder / "ui-project-400.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.get_by_role("tab", name="Code").click()
    await page.wait_for_selector("#file-text.hljs")
    await page.screenshot(path=str(folder / "ui-code-1280.png"))
    await page.goto("/")
    await page.screenshot(path=str(folder / "ui-home-1280.png"))
    print(f"screenshots in {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.screenshots))
