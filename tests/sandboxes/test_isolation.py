"""Break-out attempts against the local backend; each must fail while the host stays fine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime.settings import SandboxNetwork
from sandboxes.base import CommandFailedError, InvalidPathError, SandboxTimeoutError
from sandboxes.local.backend import LocalBackend
from sandboxes.local.sandbox import LocalSandbox

PROJECT_ROOT = Path(__file__).resolve().parents[2]

CONNECT = """
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", int(port)))
        print("CONNECTED", port)
    except OSError as e:
        print("failed", port, e)
"""

PROXY_REQUEST = """
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
s.sendall(open("request.txt", "rb").read())
print(s.recv(200).decode().splitlines()[0])
"""

pytestmark = pytest.mark.sandbox


async def run_ok(sbx: LocalSandbox, cmd: str) -> str:
    return (await sbx.commands.run(cmd, timeout=30)).stdout


async def assert_fails(sbx: LocalSandbox, cmd: str) -> CommandFailedError:
    with pytest.raises(CommandFailedError) as failure:
        await sbx.commands.run(cmd, timeout=30)
    return failure.value


async def test_runs_as_unprivileged_user_in_home(sandbox: LocalSandbox) -> None:
    out = await run_ok(
        sandbox, "id -u; id -g; pwd; cat /proc/self/status | grep -E 'CapEff|NoNewPrivs'"
    )
    uid, gid, cwd, cap_eff, no_new_privs = out.splitlines()
    assert (uid, gid, cwd) == ("1000", "1000", "/home/user")
    assert cap_eff.split()[1] == "0000000000000000"
    assert no_new_privs.split()[1] == "1"


async def test_cannot_write_outside_workspace(sandbox: LocalSandbox, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    for target in ["/usr/pwned", "/etc/pwned", "/pwned", "/home/pwned", str(canary)]:
        await assert_fails(sandbox, f"echo x > {target}")
    await assert_fails(sandbox, "rm -f /etc/passwd /usr/bin/env")
    assert not canary.exists()
    for path in ["/etc/pwned", "../pwned", "/tmp/x", str(canary), "a/../../pwned"]:
        with pytest.raises(InvalidPathError):
            await sandbox.files.write(path, "x")
    assert not canary.exists()


async def test_cannot_read_host_files(sandbox: LocalSandbox, backend: LocalBackend) -> None:
    secret = backend.settings.data_dir / "host-secret.txt"
    secret.write_text("TOP-SECRET-DATA-DIR\n")
    try:
        targets = [
            str(secret),
            str(PROJECT_ROOT / ".env"),
            str(PROJECT_ROOT / "pyproject.toml"),
            "/etc/shadow",
        ]
        for target in targets:
            await assert_fails(sandbox, f"cat {target}")
        await assert_fails(sandbox, "ls /root")
        await assert_fails(sandbox, f"ls {PROJECT_ROOT}")
        homes = await run_ok(sandbox, "ls -A /home")
        assert homes.split() == ["user"]
        everything = await run_ok(
            sandbox, "grep -rs TOP-SECRET /home /tmp /etc /run /var /root || true"
        )
        assert "TOP-SECRET" not in everything
        for target in [str(secret), str(PROJECT_ROOT / ".env"), "/etc/hostname"]:
            with pytest.raises(InvalidPathError):
                await sandbox.files.read(target)
    finally:
        secret.unlink()


async def test_no_secret_in_environment(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = "sk-leak-canary-4242"
    monkeypatch.setenv("OPENAI_API_KEY", marker)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{marker}@127.0.0.1/db")
    monkeypatch.setenv("E2B_API_KEY", marker)
    sbx = await backend.create("tiny")
    try:
        out = await run_ok(sbx, "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")
        assert marker not in out
        assert "DATABASE_URL" not in out
        assert "HOME=/home/user" in out
    finally:
        await sbx.kill()


@pytest.fixture
async def host_listener() -> AsyncIterator[int]:
    """A throwaway service on the host's loopback (standing in for PostgreSQL/Temporal)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"host service\n")
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("network", [SandboxNetwork.NONE, SandboxNetwork.REGISTRY])
async def test_host_loopback_unreachable(
    make_backend: Callable[..., LocalBackend], host_listener: int, network: SandboxNetwork
) -> None:
    sbx = await make_backend(qai_sandbox_network=network).create("tiny")
    try:
        await sbx.files.write("connect.py", CONNECT)
        out = await run_ok(sbx, f"python3 connect.py {host_listener} 5432 7233 8233")
        assert "CONNECTED" not in out
        assert out.count("failed") == 4
        if network == SandboxNetwork.REGISTRY:
            await sbx.files.write("proxy.py", PROXY_REQUEST)
            for request in [
                f"CONNECT 127.0.0.1:{host_listener} HTTP/1.1\r\n\r\n",
                "CONNECT localhost:5432 HTTP/1.1\r\n\r\n",
                f"GET http://127.0.0.1:{host_listener}/ HTTP/1.1\r\nHost: x\r\n\r\n",
                "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            ]:
                await sbx.files.write("request.txt", request)
                status = await run_ok(sbx, "python3 proxy.py")
                assert "403 Forbidden" in status, request
    finally:
        await sbx.kill()


async def test_cannot_reach_host_files_through_envd(sandbox: LocalSandbox) -> None:
    """envd's inherited fds (its stdout is the host-side supervisor log) stay out of reach."""
    envd = (await run_ok(sandbox, "pgrep -fo 'envd.py /run'")).strip()
    await assert_fails(sandbox, f"ls -l /proc/{envd}/fd/")
    await assert_fails(sandbox, f"echo pwned > /proc/{envd}/fd/1")


async def test_cannot_see_host_pids(sandbox: LocalSandbox) -> None:
    out = await run_ok(
        sandbox, "ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/[0-9]*/cmdline | tr '\\0' ' '"
    )
    count, cmdlines = out.split("\n", 1)
    assert int(count) < 15
    assert "pytest" not in cmdlines
    assert str(os.getpid()) not in out.split()


async def test_symlink_escape_refused(sandbox: LocalSandbox, backend: LocalBackend) -> None:
    await run_ok(
        sandbox,
        "ln -s /etc/hostname host-file; ln -s / root-link; ln -s /tmp tmp-link;"
        f" ln -s {backend.settings.data_dir} data-link",
    )
    for path in ["host-file", "root-link/etc/passwd", "data-link/sandboxes"]:
        with pytest.raises(InvalidPathError, match="symlink"):
            await sandbox.files.read(path)
    for path in ["root-link/tmp/x", "tmp-link/x", "host-file"]:
        with pytest.raises(InvalidPathError):
            await sandbox.files.write(path, "x")
    with pytest.raises(InvalidPathError):
        await sandbox.files.list("root-link")
    with pytest.raises(InvalidPathError):
        await sandbox.commands.run("pwd", cwd="root-link")


async def test_fork_bomb_is_contained(sandbox: LocalSandbox) -> None:
    with pytest.raises((SandboxTimeoutError, CommandFailedError)):
        await sandbox.commands.run("bomb() { bomb | bomb & }; bomb; sleep 60", timeout=5)
    host = await asyncio.create_subprocess_exec("true")  # the host can still fork
    assert await host.wait() == 0
    assert (await run_ok(sandbox, "echo alive")).strip() == "alive"
    leftover = await run_ok(sandbox, "ls /proc | grep -cE '^[0-9]+$'")
    assert int(leftover) < 15


async def test_memory_hog_is_killed(sandbox: LocalSandbox) -> None:
    failure = await assert_fails(
        sandbox,
        "python3 -c 'x = bytearray(900 * 1024 * 1024); x[::4096] = b\"1\" * len(x[::4096])'",
    )
    assert failure.exit_code != 0
    assert (await run_ok(sandbox, "echo alive")).strip() == "alive"


async def test_disk_filler_is_stopped(sandbox: LocalSandbox) -> None:
    failure = await assert_fails(sandbox, "dd if=/dev/zero of=big bs=1M count=200")
    assert "No space left" in failure.stderr
    failure = await assert_fails(sandbox, "dd if=/dev/zero of=/tmp/big bs=1M count=200")
    assert "No space left" in failure.stderr
    await run_ok(sandbox, "rm big /tmp/big")
    await sandbox.files.write("after.txt", "still works")
    assert await sandbox.files.read("after.txt") == "still works"


async def test_runaway_command_killed_without_orphans(
    sandbox: LocalSandbox, host_pids_matching: Callable[[str], list[int]]
) -> None:
    cmd = (
        "setsid sleep 4241 & (sleep 4242 &); nohup sleep 4243 >/dev/null 2>&1 &"
        " (setsid bash -c 'sleep 4244 & disown' &); while :; do :; done"
    )
    with pytest.raises(SandboxTimeoutError):
        await sandbox.commands.run(cmd, timeout=2)
    inside = await run_ok(sandbox, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert "sleep 424" not in inside
    assert host_pids_matching("sleep 424") == []


SYSCALLS = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [rc, ctypes.get_errno()]
print(json.dumps({
    "ptrace": call(101, 0, 0, 0, 0),          # PTRACE_TRACEME: allowed to anyone, normally
    "keyctl": call(250, 0, -3, 0),            # KEYCTL_GET_KEYRING_ID of the session keyring
    "unshare_user": call(272, 0x10000000),    # a new user namespace
    "mount": call(165, 0, 0, 0, 0, 0),
    "bpf": call(321, 0, 0, 0),
    "perf": call(298, 0, 0, -1, -1, 0),
    "status": open("/proc/self/status").read(),
}))
"""


async def test_a_user_namespace_and_a_seccomp_filter_and_the_cpu_is_capped(
    make_backend: Callable[..., LocalBackend],
) -> None:
    """One sandbox held to a twentieth of a CPU: its user is mapped to an unused host uid, the
    filter is installed and refuses (EPERM) what an escape would use while ordinary work
    (threads, forks) still runs, and a busy loop is throttled by its cgroup."""
    import errno
    import json

    from sandboxes.local.cgroups import SandboxCgroups
    from sandboxes.local.layout import Layout, cgroup_name

    backend = make_backend(qai_sandbox_cpus=0.05)  # low: throttled even on a loaded host
    sbx = await backend.create("tiny", timeout=300)
    try:
        await sbx.files.write("syscalls.py", SYSCALLS)
        found = json.loads(await run_ok(sbx, "python3 syscalls.py"))
        assert "Seccomp:\t2" in found.pop("status")  # a filter is installed
        for name, (rc, err) in found.items():
            assert (rc, err) == (-1, errno.EPERM), (name, rc, err)
        # The sandbox user is mapped through a user namespace: uid 1000 inside is host uid
        # 201000, its root host uid 200000; neither is anyone on the host.
        uid_map = (await run_ok(sbx, "cat /proc/self/uid_map")).split()
        assert uid_map == ["0", "200000", "65536"]
        assert (await run_ok(sbx, "id -u; echo x > mine.txt")).strip() == "1000"
        layout = Layout(backend.root / sbx.sandbox_id)
        mine = (layout.disk / "upper" / "mine.txt").stat()
        assert (mine.st_uid, mine.st_gid) == (201_000, 201_000)
        fds = (await run_ok(sbx, "ls /proc/self/fd")).split()
        assert len(fds) <= 5, fds  # stdio and the listing's own: nothing of the supervisor's
        threads = (
            "python3 -c 'import threading; "
            "t = threading.Thread(target=print, args=(1,)); t.start(); t.join()'"
        )
        assert (await run_ok(sbx, threads)).strip() == "1"
        assert (await run_ok(sbx, "sh -c 'echo $(echo forked)'")).strip() == "forked"

        groups = SandboxCgroups(cgroup_name(layout))
        before = groups.cpu_stat()
        assert before, "no cpu controller for the sandbox"
        busy = (
            "python3 -c 'import time\nend = time.monotonic() + 2\n"
            "while time.monotonic() < end: pass\nprint(time.process_time())'"
        )
        cpu_seconds = float(await run_ok(sbx, busy))
        after = groups.cpu_stat()
        assert after["nr_throttled"] > before.get("nr_throttled", 0)
        assert cpu_seconds < 0.25  # 2 s of wall time at 0.05 CPU: 0.1 s (and slack)
    finally:
        await sbx.kill()
