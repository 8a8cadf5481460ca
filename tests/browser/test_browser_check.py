"""The browser check on real Chromium, in front of small real servers standing in for a
preview (no sandbox): what the page may reach, and that a route's check always ends.

The containment test's page tries the API, Temporal, another project's preview, a loopback port,
private, link-local and outside addresses over fetch, XMLHttpRequest, <img>, <script>,
EventSource, sendBeacon and WebSocket. Loopback servers count the connections they get: none.
The proxy's refusals show the page did try each one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from activities.browser import ROUTE_SECONDS, BrowserActivities, SharedBrowser
from runtime.processes import free_port

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium (make setup)"
)


class Counter:
    """A loopback TCP listener that only counts who connects."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _seen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._seen, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self.port
        finally:
            server.close()


@asynccontextmanager
async def preview(pages: dict[str, str]) -> AsyncIterator[str]:
    """A stand-in dev server: the given HTML pages, and `/ok` answering JSON."""

    def handler(body: str) -> Callable[[web.Request], web.Response]:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(text=body, content_type="text/html")

        return handle  # type: ignore[return-value]

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ok", ok)
    for path, body in pages.items():
        app.router.add_get(path, handler(body))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def shared_browser() -> AsyncIterator[SharedBrowser]:
    """One Chromium for the module, as a worker has one."""
    browser = SharedBrowser()
    try:
        yield browser
    finally:
        await browser.close()


def reaching_page(targets: list[str]) -> str:
    """A page that tries every kind of request to each target, then marks itself done."""
    js_targets = ", ".join(f"'{t}'" for t in targets)
    return f"""<!doctype html><html><body><h1>probe</h1><script>
const targets = [{js_targets}];
const tries = [];
for (const base of targets) {{
  tries.push(fetch(base + '/fetch', {{mode: 'no-cors'}}).catch(() => null));
  tries.push(new Promise(done => {{
    const x = new XMLHttpRequest(); x.onloadend = done; x.open('GET', base + '/xhr'); x.send();
  }}));
  tries.push(new Promise(done => {{
    const i = new Image(); i.onload = i.onerror = done; i.src = base + '/img.png';
  }}));
  tries.push(new Promise(done => {{
    const s = document.createElement('script'); s.onload = s.onerror = done;
    s.src = base + '/script.js'; document.body.appendChild(s);
  }}));
  tries.push(new Promise(done => {{
    const e = new EventSource(base + '/events'); e.onerror = () => {{ e.close(); done(); }};
  }}));
  navigator.sendBeacon(base + '/beacon', 'x');
  tries.push(new Promise(done => {{
    const w = new WebSocket(base.replace('http', 'ws') + '/socket');
    w.onerror = w.onclose = done;
  }}));
}}
const own = fetch('/ok').then(r => r.json()).then(j => j.ok ? 'own-ok' : 'own-bad');
Promise.all([own, ...tries]).then(([ownResult]) => {{ document.title = 'done ' + ownResult; }});
</script></body></html>"""


async def test_the_page_reaches_only_its_own_origin(shared_browser: SharedBrowser) -> None:
    counters = {name: Counter() for name in ("api", "temporal", "other preview", "loopback")}
    async with (
        counters["api"].running() as api,
        counters["temporal"].running() as temporal,
        counters["other preview"].running() as gateway,
        counters["loopback"].running() as loopback,
    ):
        other = f"http://{uuid.uuid4()}.preview.localhost:{gateway}"
        targets = [
            f"http://127.0.0.1:{api}",
            f"http://localhost:{temporal}",
            other,
            f"http://[::1]:{loopback}",
            f"http://127.0.0.2:{loopback}",
            "http://169.254.169.254",  # cloud metadata
            "http://10.1.2.3",
            "http://203.0.113.9",  # an outside address
            "https://example.com",
        ]
        async with (
            preview({"/": reaching_page(targets)}) as origin,
            shared_browser.page(origin) as (page, proxy),
        ):
            await page.goto(origin + "/")
            await page.wait_for_function("document.title.startsWith('done')", timeout=30_000)
            assert await page.title() == "done own-ok"  # its own origin answers
            refused = "\n".join(proxy.refused)
        for name, counter in counters.items():
            assert counter.connections == 0, f"the page reached the {name} stand-in"
        for target in targets:
            host = target.split("//", 1)[1]
            assert host in refused, f"the page never tried {target}: {refused}"
        for kind in ("/fetch", "/xhr", "/img.png", "/script.js", "/events", "/beacon"):
            assert f"http://127.0.0.1:{api}{kind}" in refused
        assert f"CONNECT 127.0.0.1:{api}" in refused  # the WebSocket, tunnelled and refused


NEVER_QUIET = """<!doctype html><html><body><h1>busy</h1><script>
setInterval(() => fetch('/ok?' + Math.random()), 100);
</script></body></html>"""
DIALOGS = """<!doctype html><html><body><h1>dialogs</h1><script>
alert('hello'); confirm('sure?'); prompt('name?');
window.open('/ok', '_blank');
setTimeout(() => { alert('again'); window.open('https://example.com'); }, 200);
</script><a href="/ok" download>download</a></body></html>"""
BROKEN = """<!doctype html><html><body><h1>broken</h1><script>
console.error('a console error');
fetch('/missing-api').then(r => r.ok && r.json());
Promise.reject(new Error('nobody catches this'));
throw new Error('thrown on load');
</script><img src="/favicon.ico"></body></html>"""


@pytest.mark.slow  # waits out each page's bounds on purpose
async def test_every_route_check_ends_in_bounded_time(shared_browser: SharedBrowser) -> None:
    """A page that never goes quiet, one full of dialogs and popups, and a broken one: each
    check ends within its budget, and what the broken page did is reported."""
    checks = BrowserActivities(services=None, browser=shared_browser)  # type: ignore[arg-type]
    pages = {"/busy": NEVER_QUIET, "/dialogs": DIALOGS, "/broken": BROKEN}
    async with preview(pages) as origin:
        seconds: dict[str, float] = {}
        found: dict[str, list[str]] = {}
        for route in pages:
            started = time.monotonic()
            issues, _ = await checks._check_route(origin, route)
            found[route] = [i.message for i in issues]
            seconds[route] = time.monotonic() - started
    print("seconds per route:", seconds)
    assert all(s < ROUTE_SECONDS for s in seconds.values()), seconds
    assert found["/busy"] == []
    assert found["/dialogs"] == []
    assert sorted(found["/broken"]) == sorted(
        [
            "/broken: console.error: a console error",
            "/broken: request: GET /missing-api answered 404",
            "/broken: uncaught: nobody catches this",
            "/broken: uncaught: thrown on load",
        ]
    ), found["/broken"]


async def test_without_a_browser_the_check_is_skipped(tmp_path: Path) -> None:
    from activities.browser import BrowserUnavailable

    missing = SharedBrowser(tmp_path / "no-chromium")
    with pytest.raises(BrowserUnavailable, match="no browser"):
        await missing.browser()
