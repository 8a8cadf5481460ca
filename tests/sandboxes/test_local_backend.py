"""The local backend's functional behaviour: files, commands, preview, lifetime and clean-up."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from runtime.settings import SandboxBackendName, Settings
from sandboxes.base import (
    CommandFailedError,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    SandboxTimeoutError,
    WriteEntry,
)
from sandboxes.factory import sandbox_backend
from sandboxes.local import mounts
from sandboxes.local.backend import LocalBackend
from sandboxes.local.cgroups import SandboxCgroups
from sandboxes.local.layout import Layout, cgroup_name, process_alive, read_state
from sandboxes.local.pool import WarmPool
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.local.templates import LocalTemplate

PROJECT_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.sandbox


async def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def http_get(url: str, seconds: float = 20) -> httpx.Response:
    """GET once the server answers (the dev server starts with the sandbox)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=5)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def nothing_left(backend: LocalBackend, sandbox_id: str) -> list[str]:
    """Everything of a sandbox still present on the host (empty when fully cleaned up)."""
    layout = Layout(backend.root / sandbox_id)
    left = []
    if layout.root.exists():
        left.append(f"dir {layout.root}")
    left += [f"mount {m}" for m in mounts.mounts_under(layout.root)]
    left += [f"cgroup {d}" for d in SandboxCgroups(cgroup_name(layout)).dirs if d.exists()]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if sandbox_id in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    left.append(f"process {entry.name}")
            except OSError:
                continue
    return left


async def test_files_round_trip(sandbox: LocalSandbox) -> None:
    info = await sandbox.files.write("src/app/page.txt", "héllo")
    assert (info.path, info.type, info.size) == ("/home/user/src/app/page.txt", "file", 6)
    await sandbox.files.write("/home/user/blob.bin", bytes(range(256)))
    entries = await sandbox.files.write_files(
        [WriteEntry("many/a.txt", "A"), WriteEntry("many/b.txt", b"B")]
    )
    assert [e.name for e in entries] == ["a.txt", "b.txt"]
    assert await sandbox.files.read("src/app/page.txt") == "héllo"
    assert await sandbox.files.read("blob.bin", format="bytes") == bytes(range(256))
    assert await sandbox.files.read("notes/readme.txt") == "from the template\n"
    names = {e.name: e.type for e in await sandbox.files.list()}
    assert names["many"] == "dir" and names["index.html"] == "file"
    assert await sandbox.files.exists("many/b.txt")
    assert not await sandbox.files.exists("missing.txt")
    with pytest.raises(SandboxFileNotFoundError):
        await sandbox.files.read("missing.txt")
    owner = await sandbox.commands.run("stat -c %U src/app/page.txt; cat many/a.txt many/b.txt")
    assert owner.stdout == "user\nAB"


async def test_command_results(sandbox: LocalSandbox) -> None:
    seen: list[str] = []
    errors: list[str] = []

    async def on_err(text: str) -> None:
        errors.append(text)

    result = await sandbox.commands.run(
        "echo out; echo err >&2; echo $GREETING; pwd",
        cwd="notes",
        envs={"GREETING": "hi"},
        on_stdout=seen.append,
        on_stderr=on_err,
    )
    assert result.stdout == "out\nhi\n/home/user/notes\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 0
    assert "".join(seen) == result.stdout and "".join(errors) == "err\n"
    with pytest.raises(CommandFailedError) as failure:
        await sandbox.commands.run("echo partial; exit 3")
    assert failure.value.exit_code == 3 and failure.value.stdout == "partial\n"


async def test_command_timeout(sandbox: LocalSandbox) -> None:
    with pytest.raises(SandboxTimeoutError, match="timed out"):
        await sandbox.commands.run("sleep 30", timeout=1)
    assert (await sandbox.commands.run("echo next")).stdout == "next\n"


async def test_output_is_bounded(sandbox: LocalSandbox) -> None:
    result = await sandbox.commands.run("seq 1 100000; echo done >&2")
    assert result.truncated
    assert "bytes of output truncated" in result.stdout
    assert result.stdout.startswith("1\n2\n") and result.stdout.endswith("100000\n")
    assert len(result.stdout) < 70_000


async def test_background_commands(sandbox: LocalSandbox) -> None:
    lines: list[str] = []
    handle = await sandbox.commands.run(
        "for i in 1 2 3; do echo $i; done", background=True, on_stdout=lines.append
    )
    assert (await handle.wait()).stdout == "1\n2\n3\n"
    assert "".join(lines) == "1\n2\n3\n"
    server = await sandbox.commands.run("sleep 300", background=True, timeout=0)
    assert (
        "sleep 300"
        in (await sandbox.commands.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")).stdout
    )
    assert await server.kill()
    with pytest.raises(CommandFailedError):
        await server.wait()
    assert not await server.kill()
    ps = await sandbox.commands.run("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "sleep 300" not in ps.stdout


async def test_preview_serves_new_content(sandbox: LocalSandbox) -> None:
    host = sandbox.get_host(3000)
    assert host.startswith("127.0.0.1:")
    first = await http_get(f"http://{host}/index.html")
    assert "tiny template" in first.text
    await sandbox.files.write("index.html", "<h1>edited by the agent</h1>")
    second = await http_get(sandbox.preview_url(3000) + "/index.html")
    assert second.text == "<h1>edited by the agent</h1>"


async def test_the_first_page_is_requested_as_soon_as_the_app_starts(
    make_settings: Callable[..., Settings], tiny_template: LocalTemplate
) -> None:
    """Like E2B's compile_page.sh: the app compiles its first page before anyone opens it."""
    warmed = dataclasses.replace(tiny_template, ready_path="/notes/readme.txt")
    backend = LocalBackend(make_settings(), templates={"tiny": warmed, "plain": tiny_template})
    sandbox, plain = await backend.create("tiny"), await backend.create("plain")
    try:
        log = ""
        deadline = time.monotonic() + 30
        while "warm-up request" not in log:
            assert time.monotonic() < deadline, f"no warm-up request; start log: {log!r}"
            await asyncio.sleep(0.1)
            log = (await sandbox.commands.run("cat /tmp/qai-start.log")).stdout
        # The app itself saw the request, and the daemon logged that it answered.
        assert '"GET /notes/readme.txt HTTP/1.1" 200' in log
        assert "warm-up request http://127.0.0.1:3000/notes/readme.txt answered 200" in log
        # A template without a first page gets no request (its own start is well past by now).
        await http_get(f"http://{plain.get_host(3000)}/index.html")
        assert "warm-up" not in (await plain.commands.run("cat /tmp/qai-start.log")).stdout
    finally:
        await sandbox.kill()
        await plain.kill()


async def test_raw_tcp_relay_on_other_port(sandbox: LocalSandbox) -> None:
    """Any port relays raw bytes both ways (what websockets and hot reload need)."""
    echo = (
        "import socket\ns = socket.create_server(('127.0.0.1', 4000))\n"
        "c, _ = s.accept()\nwhile data := c.recv(100):\n    c.sendall(data.upper())\n"
    )
    await sandbox.files.write("echo.py", echo)
    await sandbox.commands.run("python3 echo.py", background=True, timeout=0)
    host, port = sandbox.get_host(4000).split(":")
    deadline = time.monotonic() + 30
    while True:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"ping")
        await writer.drain()
        reply = await reader.read(100)
        if reply or time.monotonic() > deadline:
            break
        writer.close()  # the echo server was not listening yet; the relay closed on us
        await asyncio.sleep(0.05)
    assert reply == b"PING"
    writer.write(b"again")
    await writer.drain()
    assert await reader.read(100) == b"AGAIN"
    writer.close()


RESETTER = """
import socket, time
s = socket.create_server(("127.0.0.1", 4001))
while True:
    c, _ = s.accept()
    while not c.recv(1, socket.MSG_PEEK):
        pass
    c.close()  # with the request unread: the kernel answers with a reset
"""


async def test_relay_never_hangs_on_a_vanished_upstream(sandbox: LocalSandbox) -> None:
    """A request sent when nothing listens, or one the server resets, ends the connection."""
    await sandbox.files.write("resetter.py", RESETTER)
    await sandbox.commands.run("python3 resetter.py", background=True, timeout=0)
    for port in [4999, 4001, 4001, 4001]:
        host, host_port = sandbox.get_host(port).split(":")
        reader, writer = await asyncio.open_connection(host, int(host_port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            assert await asyncio.wait_for(reader.read(100), 15) == b""
        writer.close()


async def test_reconnect_from_new_backend_and_process(
    sandbox: LocalSandbox, make_backend: Callable[..., LocalBackend]
) -> None:
    await sandbox.files.write("state.txt", "kept")
    again = await make_backend().connect(sandbox.sandbox_id)
    assert await again.files.read("state.txt") == "kept"
    assert again.get_host(3000) == sandbox.get_host(3000)
    script = (
        "import asyncio, sys\n"
        "from runtime.settings import Settings\n"
        "from sandboxes.local.backend import LocalBackend\n"
        "async def main():\n"
        f"    b = LocalBackend(Settings(qai_data_dir={str(make_backend().root.parent)!r}))\n"
        f"    s = await b.connect({sandbox.sandbox_id!r})\n"
        "    print((await s.commands.run('cat state.txt')).stdout)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert stdout.decode().strip().endswith("kept")
    with pytest.raises(SandboxNotFoundError):
        await make_backend().connect("sbx-000000000000")
    with pytest.raises(SandboxNotFoundError):
        await make_backend().connect("../../etc")


async def test_expired_sandbox_is_reaped(backend: LocalBackend) -> None:
    short = await backend.create("tiny", timeout=1)
    extended = await backend.create("tiny", timeout=1)
    await extended.set_timeout(120)
    original_expiry = time.time() + 1
    await wait_for(lambda: nothing_left(backend, short.sandbox_id) == [])
    assert not await short.is_running()
    with pytest.raises(SandboxNotFoundError):
        await backend.connect(short.sandbox_id)
    await wait_for(lambda: time.time() > original_expiry + 1)
    assert await extended.is_running()
    assert (await extended.commands.run("echo alive")).stdout == "alive\n"
    assert await extended.kill()


async def test_kill_leaves_nothing(backend: LocalBackend) -> None:
    sbx = await backend.create("tiny")
    await sbx.commands.run("sleep 600", background=True, timeout=0)
    host, port = sbx.get_host(3000).split(":")
    assert nothing_left(backend, sbx.sandbox_id) != []
    pids = SandboxCgroups(cgroup_name(Layout(backend.root / sbx.sandbox_id))).pids()
    assert len(pids) >= 4  # bwrap's init, envd, the dev server, sleep
    assert await sbx.kill()
    assert nothing_left(backend, sbx.sandbox_id) == []
    assert [pid for pid in pids if running(pid)] == []
    assert not await sbx.is_running()
    assert not await sbx.kill()
    with pytest.raises(OSError):
        await asyncio.open_connection(host, int(port))
    with pytest.raises(SandboxNotFoundError):
        await sbx.commands.run("true")


async def test_sweep_cleans_after_crashed_supervisor(
    backend: LocalBackend, make_backend: Callable[..., LocalBackend]
) -> None:
    sbx = await backend.create("tiny")
    pids = SandboxCgroups(cgroup_name(Layout(backend.root / sbx.sandbox_id))).pids()
    supervisor = read_state(Layout(backend.root / sbx.sandbox_id).state)["supervisor"]
    os.kill(supervisor["pid"], signal.SIGKILL)  # a crash: no teardown runs
    await wait_for(lambda: not process_alive(supervisor["pid"], supervisor["start_time"]))
    assert Layout(backend.root / sbx.sandbox_id).root.exists()
    assert not await sbx.is_running()
    fresh = make_backend()
    await fresh.start()
    assert nothing_left(backend, sbx.sandbox_id) == []
    assert [pid for pid in pids if running(pid)] == []


async def test_kill_owned_kills_what_this_backend_started_or_claimed(
    make_settings: Callable[..., Settings], tiny_template: LocalTemplate, tmp_path: Path
) -> None:
    """What a stopping `worker.py --dev` kills: sandboxes it created, those it claimed from the
    pool, and its pool's unclaimed members. A member another process claimed, and sandboxes
    another process created, are theirs and stay."""
    templates = {"tiny": tiny_template, "plain": dataclasses.replace(tiny_template, name="plain")}

    def make() -> LocalBackend:
        backend = LocalBackend(
            make_settings(qai_data_dir=tmp_path, qai_sandbox_pool_size=1), templates=templates
        )
        backend.pool = WarmPool(backend, 1, template="tiny")
        return backend

    async def warm_member(other_than: set[str]) -> str:
        def found() -> list[str]:
            usable, _ = worker.pool.entries(tiny_template)
            return [e.sandbox_id for e in usable if e.warm and e.sandbox_id not in other_than]

        await wait_for(lambda: bool(found()), seconds=60)
        return found()[0]

    worker, other = make(), make()  # `other` is not started: it only claims and creates
    await worker.start()
    try:
        first = await warm_member(set())
        assert (await worker.create("tiny")).sandbox_id == first  # claimed; the pool refills
        second = await warm_member({first})
        assert (await other.create("tiny")).sandbox_id == second  # claimed by another process
        worker.pool.wake()  # it would notice the claim on its next round
        third = await warm_member({first, second})
        created = await worker.create("plain")  # not a pool template: started for the caller
        stranger = await other.create("plain")

        killed = await worker.kill_owned()

        assert killed == [third, *sorted([first, created.sandbox_id])]
        assert not worker.pool.running
        assert sorted(worker.list_ids()) == sorted([second, stranger.sandbox_id])
        for sandbox_id in killed:
            assert nothing_left(worker, sandbox_id) == []
        assert await worker.kill_owned() == []
    finally:
        await worker.close()
        for sandbox_id in worker.list_ids():
            await other.kill(sandbox_id)


def test_factory_chooses_backend(make_settings: Callable[..., Settings]) -> None:
    from sandboxes.e2b_backend import E2BBackend

    assert isinstance(sandbox_backend(make_settings()), LocalBackend)
    chosen = sandbox_backend(make_settings(qai_sandbox_backend=SandboxBackendName.E2B))
    assert isinstance(chosen, E2BBackend)
