"""The browser check and the version screenshot: the draft opened in headless Chromium.

One Chromium per worker (Debian's, driven by Playwright), started on first use and reused; each
check gets a fresh context whose every connection goes through an `OriginProxy` that reaches the
preview's own origin only. A route gets a bounded time: a page that never goes quiet still ends
its check. Dialogs are dismissed; popups, downloads and permission prompts are refused. A check
that cannot run (no browser, the sandbox is gone) is `skipped` with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity

from activities.browser_proxy import OriginProxy
from activities.checks import changed_routes
from activities.events import emit
from activities.heartbeat import heartbeating
from activities.sandbox_service import preview_port
from activities.services import Services
from agent import browser_checks as bc
from agent.checks import CheckResult, CheckStatus
from contract import BrowserCheckInput, ScreenshotInput, ScreenshotResult
from runtime import metrics
from sandboxes.base import SandboxError, SandboxNotFoundError
from sandboxes.manifest import load_manifest
from storage import queries, screenshots
from storage.events import EventKind
from storage.views import message_view

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # the worker runs as root; the page is contained by the proxy below
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    # WebRTC may not open UDP around the proxy.
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
]
VIEWPORT = {"width": 1280, "height": 800}
LOAD_SECONDS = 20.0
"""Until the page's `load` event (the routes check compiled it already)."""
QUIET_SECONDS = 3.0
"""At most this long for the network to go quiet after `load`."""
SETTLE_SECONDS = 0.5
"""Then this long for effects that run after the last request."""
PENDING_SECONDS = 10.0
"""Then at most this long for the page's own requests still open (a route compiling on first
request, such as Next's not-found page, answers after seconds)."""
ROUTE_SECONDS = LOAD_SECONDS + QUIET_SECONDS + SETTLE_SECONDS + PENDING_SECONDS + 5.0
"""A route's whole budget, whatever the page does."""
MAP_SECONDS = 10.0
MAX_ROUTES = 8
"""Routes opened per check; the rest were still requested by the routes check."""
SCREENSHOT_MAX_BYTES = 300 * 1024
WEBP_QUALITIES = (80, 60, 40, 20)


class BrowserUnavailable(Exception):
    """Chromium could not be started here."""


class SharedBrowser:
    """This worker's Chromium, started on first use and restarted if it died."""

    def __init__(self, executable: Path = CHROMIUM) -> None:
        self._executable = executable
        self._lock = asyncio.Lock()
        self._playwright: Any = None
        self._browser: Any = None
        self._deny_all = OriginProxy(None)
        self._deny_stack: contextlib.AsyncExitStack | None = None

    async def browser(self) -> Any:
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            await self._close_locked()
            if not self._executable.exists():
                raise BrowserUnavailable(f"no browser at {self._executable}")
            from playwright.async_api import Error as PlaywrightError
            from playwright.async_api import async_playwright

            stack = contextlib.AsyncExitStack()
            # Anything not given a context proxy (there should be nothing) reaches no one.
            deny_url = await stack.enter_async_context(self._deny_all.running())
            try:
                self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=str(self._executable),
                    headless=True,
                    args=CHROMIUM_ARGS,
                    proxy={"server": deny_url, "bypass": "<-loopback>"},
                )
            except PlaywrightError as error:
                await stack.aclose()
                await self._close_locked()
                raise BrowserUnavailable(f"the browser did not start: {error.message}") from None
            self._deny_stack = stack
            return self._browser

    @asynccontextmanager
    async def page(self, origin: str) -> AsyncIterator[tuple[Any, OriginProxy]]:
        """A page in a fresh context that reaches `origin` only."""
        browser = await self.browser()
        proxy = OriginProxy(origin)
        async with proxy.running() as proxy_url:
            context = await browser.new_context(
                proxy={"server": proxy_url, "bypass": "<-loopback>"},
                viewport=VIEWPORT,
                accept_downloads=False,
                service_workers="block",
                permissions=[],
            )
            try:
                context.on("page", _close_popup)
                await context.add_init_script(bc.INIT_SCRIPT)
                page = await context.new_page()
                page.on("dialog", _dismiss)
                yield page, proxy
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(context.close(), 10)

    async def close(self) -> None:
        async with self._lock:
            await self._close_locked()

    async def _close_locked(self) -> None:
        browser, playwright, stack = self._browser, self._playwright, self._deny_stack
        self._browser = self._playwright = self._deny_stack = None
        with contextlib.suppress(Exception):
            if browser is not None:
                await asyncio.wait_for(browser.close(), 10)
        with contextlib.suppress(Exception):
            if playwright is not None:
                await asyncio.wait_for(playwright.stop(), 10)
        if stack is not None:
            await stack.aclose()


async def _dismiss(dialog: Any) -> None:
    with contextlib.suppress(Exception):
        await dialog.dismiss()


async def _close_popup(page: Any) -> None:
    """Every page but the check's own is a popup (window.open, target=_blank): closed."""
    if await page.opener() is not None or len(page.context.pages) > 1:
        with contextlib.suppress(Exception):
            await page.close()


def _skipped(reason: str, detail: object) -> CheckResult:
    activity.logger.warning("check browser skipped: %s (%s)", reason, detail)
    return metrics.check_done(CheckResult(name=bc.CHECK, status=CheckStatus.SKIPPED, reason=reason))


class BrowserActivities:
    def __init__(self, services: Services, browser: SharedBrowser) -> None:
        self._services = services
        self._browser = browser

    @activity.defn(name="check_browser")
    async def check_browser(self, input: BrowserCheckInput) -> CheckResult:
        """Each route the run added or changed, opened in Chromium: what its page threw,
        logged as errors, failed to load, or showed in Next.js's error overlay."""
        routes, _ = await changed_routes(self._services.db, input.project_id, input.run_id)
        if not routes:
            return _skipped("the run changed no route", "no routes")
        routes = routes[:MAX_ROUTES]
        per_route: list[list[bc.CheckIssue]] = []
        image: bytes | None = None
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            origin = sandbox.preview_url(preview_port()).rstrip("/")
            async with heartbeating():
                for route in routes:
                    found, shot = await self._check_route(origin, route, shoot=route == "/")
                    per_route.append(found)
                    image = image or shot
        except SandboxNotFoundError as error:
            return _skipped("the sandbox is gone", error)
        except SandboxError as error:
            return _skipped("the sandbox could not run it", error)
        except BrowserUnavailable as error:
            return _skipped("no browser", error)
        found = bc.all_issues(per_route)
        status = CheckStatus.FAILED if found else CheckStatus.PASSED
        screenshot_id = None
        if image is not None:  # `/` as checked: the run's screenshot if this is the last round
            screenshot_id = await self._store(str(input.run_id), input.project_id, image, None)
        result = CheckResult(
            name=bc.CHECK, status=status, issues=found, screenshot_id=screenshot_id
        )
        return metrics.check_done(result)

    async def _check_route(
        self, origin: str, route: str, *, shoot: bool = False
    ) -> tuple[list[bc.CheckIssue], bytes | None]:
        """The route's issues, and its screenshot when `shoot` and the page settled."""
        started = time.monotonic()
        problems: list[bc.PageProblem] = []
        image = None
        async with self._browser.page(origin) as (page, _proxy):
            pending = _collect(page, origin, problems)
            try:
                async with asyncio.timeout(ROUTE_SECONDS):
                    await _visit(page, origin + route, problems)
                    await _answered(pending)
                    stacks = await _console_stacks(page)
                    overlay = await page.evaluate(bc.OVERLAY_SCRIPT)
                    if shoot:
                        image = await _webp(page)
            except TimeoutError:
                # Slow is not wrong (a busy machine, a first compile): what it saw still counts.
                activity.logger.info("route %s did not settle in %g s", route, ROUTE_SECONDS)
                stacks, overlay = [], None
            except Exception as error:  # the page crashed or closed itself
                activity.logger.info("route %s: page ended early: %s", route, error)
                stacks, overlay = [], None
        _attach_console_stacks(problems, stacks)
        if (shown := bc.overlay_problem(overlay)) is not None:
            problems.append(shown)
        locations = await _locations(origin, problems)
        activity.logger.info(
            "browser check %s: %d problems in %.2f s",
            route,
            len(problems),
            time.monotonic() - started,
        )
        return bc.issues(route, problems, locations), image

    @activity.defn(name="take_screenshot")
    async def take_screenshot(self, input: ScreenshotInput) -> ScreenshotResult:
        """`/` at 1280x800 as WebP (at most 300 KB), stored once under `input.key`."""
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            origin = sandbox.preview_url(preview_port()).rstrip("/")
            async with heartbeating(), asyncio.timeout(ROUTE_SECONDS + 20):
                image = await self._capture(origin)
        except SandboxError as error:
            activity.logger.warning("no screenshot: %s", error)
            return ScreenshotResult(reason="the sandbox is gone")
        except BrowserUnavailable as error:
            activity.logger.warning("no screenshot: %s", error)
            return ScreenshotResult(reason="no browser")
        except TimeoutError:
            return ScreenshotResult(reason="the page did not settle")
        if image is None:
            return ScreenshotResult(reason="the image was too large")
        key, message_id = input.key, input.fragment_message_id
        screenshot_id = await self._store(key, input.project_id, image, message_id)
        if message_id is not None:  # a saved version now has its picture: pages show it
            await self._announce(message_id)
        return ScreenshotResult(screenshot_id=screenshot_id)

    async def _announce(self, message_id: uuid.UUID) -> None:
        async with self._services.db.session() as session:
            message = await queries.get_message(session, message_id)
        if message is not None and message.fragment is not None:
            key = f"message:{message.id}:screenshot"
            await emit(self._services.db, message.id, EventKind.MESSAGE, key, message_view(message))

    async def _store(
        self, key: str, project_id: uuid.UUID, image: bytes, message: uuid.UUID | None
    ) -> uuid.UUID:
        async with self._services.db.session() as session:
            screenshot_id = await screenshots.save(
                session,
                key=key,
                project_id=project_id,
                data=image,
                media_type="image/webp",
                width=VIEWPORT["width"],
                height=VIEWPORT["height"],
                fragment_message_id=message,
            )
            await session.commit()
        activity.logger.info("screenshot %s: %d bytes", screenshot_id, len(image))
        return screenshot_id

    async def _capture(self, origin: str) -> bytes | None:
        async with self._browser.page(origin) as (page, _proxy):
            with contextlib.suppress(Exception):
                await _visit(page, origin + "/", [])
            return await _webp(page)


async def _webp(page: Any) -> bytes | None:
    """The viewport as WebP, at the best quality that fits SCREENSHOT_MAX_BYTES."""
    cdp = await page.context.new_cdp_session(page)
    for quality in WEBP_QUALITIES:
        shot = await cdp.send("Page.captureScreenshot", {"format": "webp", "quality": quality})
        data = base64.b64decode(shot["data"])
        if len(data) <= SCREENSHOT_MAX_BYTES:
            return data
    return None


def _collect(page: Any, origin: str, problems: list[bc.PageProblem]) -> set[Any]:
    """Record the page's problems into `problems`; returns its own requests still open."""
    pending: set[Any] = set()

    def on_request(request: Any) -> None:
        if bc.reported_request(request.url, origin):
            pending.add(request)

    def on_error(error: Any) -> None:
        problems.append(
            bc.PageProblem(kind="uncaught", text=error.message or str(error), stack=error.stack)
        )

    def on_console(message: Any) -> None:
        if message.type == "error" and (found := bc.console_problem(message.text, None)):
            problems.append(found)

    def on_response(response: Any) -> None:
        if response.status >= 400 and bc.reported_request(response.url, origin):
            method = response.request.method
            text = f"{method} {_path(response.url)} answered {response.status}"
            problems.append(bc.PageProblem(kind="request", text=text))

    def on_failed(request: Any) -> None:
        pending.discard(request)
        failure = request.failure or ""
        if "ERR_ABORTED" in failure or not bc.reported_request(request.url, origin):
            return
        text = f"{request.method} {_path(request.url)} failed: {failure}"
        problems.append(bc.PageProblem(kind="request", text=text))

    page.on("pageerror", on_error)
    page.on("console", on_console)
    page.on("request", on_request)
    page.on("requestfinished", lambda request: pending.discard(request))
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    return pending


async def _answered(pending: set[Any]) -> None:
    """Until the page's own open requests are answered (bounded), then settle once more."""
    deadline = time.monotonic() + PENDING_SECONDS
    waited = False
    while pending and time.monotonic() < deadline:
        waited = True
        await asyncio.sleep(0.1)
    if waited:
        await asyncio.sleep(SETTLE_SECONDS)


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _visit(page: Any, url: str, problems: list[bc.PageProblem]) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.goto(url, wait_until="load", timeout=LOAD_SECONDS * 1000)
    except PlaywrightTimeout:  # slow is not wrong; what the page did meanwhile still counts
        return
    with contextlib.suppress(PlaywrightTimeout):
        await page.wait_for_load_state("networkidle", timeout=QUIET_SECONDS * 1000)
    await page.wait_for_timeout(SETTLE_SECONDS * 1000)


async def _console_stacks(page: Any) -> list[list[str]]:
    stacks = await page.evaluate("() => window.__qaiConsoleStacks || []")
    return stacks if isinstance(stacks, list) else []


def _attach_console_stacks(problems: list[bc.PageProblem], stacks: list[list[str]]) -> None:
    """Give console errors the stacks the init script recorded for them, by their text."""
    by_text: dict[str, str] = {}
    for entry in stacks:
        if isinstance(entry, list) and len(entry) == 2:
            by_text.setdefault(str(entry[0])[:200], str(entry[1]))
    for index, problem in enumerate(problems):
        if problem.kind == "console.error" and problem.stack is None:
            stack = by_text.get(problem.text[:200])
            if stack:
                problems[index] = problem.model_copy(update={"stack": stack})


async def _locations(origin: str, problems: list[bc.PageProblem]) -> dict[int, tuple[str, int]]:
    """Each problem's place in the app's source, mapped by the dev server (as its overlay
    does): the first frame of the stack that is the app's own code."""
    workdir = load_manifest().workdir
    found: dict[int, tuple[str, int]] = {}
    seen: dict[str, tuple[str, int] | None] = {}
    async with httpx.AsyncClient(timeout=MAP_SECONDS) as client:
        for index, problem in enumerate(problems):
            if not problem.stack:
                continue
            if problem.stack in seen:
                where = seen[problem.stack]
            else:
                frames = bc.stack_frames(problem.stack, origin, workdir)
                where = await _map(client, origin, frames) if frames else None
                seen[problem.stack] = where
            if where:
                found[index] = where
    return found


async def _map(
    client: httpx.AsyncClient, origin: str, frames: list[dict[str, Any]]
) -> tuple[str, int] | None:
    body = {"frames": frames, "isServer": False, "isEdgeServer": False, "isAppDirectory": True}
    try:
        response = await client.post(origin + bc.STACK_FRAMES_PATH, json=body)
        if response.status_code != 200:
            return None
        return bc.app_location(response.json())
    except (httpx.HTTPError, ValueError):
        return None
