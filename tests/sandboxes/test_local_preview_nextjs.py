"""The real Next.js template in a local sandbox: the preview serves what the agent writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from runtime.settings import Settings
from sandboxes.local.backend import LocalBackend
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.local.templates import LocalTemplate, built_template

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PAGE = 'export default function Page() {\n  return <h1 id="agent">Written by the agent</h1>;\n}\n'


@pytest.fixture(scope="module")
def nextjs_template() -> LocalTemplate:
    """Built once into the project's data dir (cached), like the worker does."""
    return built_template(Settings())


@pytest.fixture
async def nextjs(
    make_settings: Callable[..., Settings], nextjs_template: LocalTemplate
) -> AsyncIterator[LocalSandbox]:
    backend = LocalBackend(
        make_settings(qai_sandbox_memory_mb=3072, qai_sandbox_pids=1024, qai_sandbox_disk_mb=1024),
        templates={"nextjs": nextjs_template},
    )
    sbx = await backend.create("nextjs", timeout=600)
    try:
        yield sbx
    finally:
        await sbx.kill()


async def get_text(session: aiohttp.ClientSession, url: str, seconds: float = 120) -> str:
    """The page once the dev server answers it (it starts with the sandbox)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=90)) as response:
                if response.status == 200:
                    return await response.text()
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        await asyncio.sleep(0.1)


async def test_preview_serves_written_page_and_hot_reload_socket(nextjs: LocalSandbox) -> None:
    url = nextjs.preview_url(3000)
    async with aiohttp.ClientSession() as session:
        first = await get_text(session, url)
        assert "<html" in first
        assert "Written by the agent" not in first
        await nextjs.files.write("app/page.tsx", PAGE)
        deadline = time.monotonic() + 60
        while "Written by the agent" not in (await get_text(session, url)):
            assert time.monotonic() < deadline, "the preview never showed the new page"
            await asyncio.sleep(0.2)
        async with session.ws_connect(f"{url}/_next/webpack-hmr") as socket:
            message = await socket.receive(timeout=30)
            assert message.type == aiohttp.WSMsgType.TEXT


async def test_the_native_type_check_reports_what_typescript_5_reports(
    nextjs: LocalSandbox,
) -> None:
    """The draft's type check runs TypeScript 7 (tsgo); its errors are TypeScript 5's."""
    from activities.checks import run_tsc
    from agent.checks import TSC_JS_COMMAND, parse_tsc
    from sandboxes.base import CommandFailedError, WriteEntry

    def found(issues: list) -> list[tuple[str | None, int | None, str]]:
        # The dev server regenerates `.next/types` (route types) when pages appear, so a check
        # in that moment may also see a half-written route list: not the compiler's doing.
        return [(i.file, i.line, i.message) for i in issues if not i.file.startswith(".next/")]

    async def typescript_5() -> list:
        try:
            await nextjs.commands.run(TSC_JS_COMMAND, timeout=300)
        except CommandFailedError as failed:
            return parse_tsc(failed.stdout + "\n" + failed.stderr)
        return []

    await nextjs.commands.run("test -x node_modules/.bin/tsgo", timeout=30)  # not the fallback
    assert (await run_tsc(nextjs)).status == "passed"  # globals.css, process.env: no errors
    await nextjs.files.write_files(
        [
            WriteEntry("app/page.tsx", "const count: number = 'x';\n" + PAGE),
            WriteEntry("app/b/page.tsx", "import m from './missing';\n" + PAGE),
            WriteEntry("lib/env.ts", "export const mode = process.env.NODE_ENV;\n"),
        ]
    )
    before = await typescript_5()
    native = await run_tsc(nextjs)
    assert native.status == "failed"
    assert found(native.issues) == found(before)
    assert [(file, line, message[:6]) for file, line, message in found(native.issues)] == [
        ("app/b/page.tsx", 1, "TS2307"),
        ("app/page.tsx", 1, "TS2322"),
    ]
