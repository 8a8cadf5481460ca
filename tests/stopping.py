"""Helpers for tests that stop qai with real signals and then prove nothing is left running.

They start `worker.py --dev` or `make demo` in a data directory of their own and look at /proc:
a process's descendants (collected while it runs, since they are reparented when it exits),
processes whose command line names the data directory (servers and detached sandbox
supervisors do), and pidfd waits (no polling) for a set of processes to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runtime.processes import free_port
from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_LIMIT = 60.0
"""Seconds a stopped stack gets to be gone (it takes about two)."""


def default_stop_signals() -> None:
    """A `preexec_fn`: the child starts with SIGINT, SIGTERM and SIGHUP at their defaults.

    qai leaves a stop signal alone when it inherits it ignored (as under nohup); a test runner
    started in the background may ignore SIGINT, and that must not change what is tested.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def descendants(root: int) -> set[int]:
    """`root` and every process below it, as of now."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pids: Iterable[int]) -> list[int]:
    """Those of `pids` still running (zombies, which only wait to be reaped, excluded)."""
    return sorted(pid for pid in pids if (stat := _stat(pid)) is not None and stat[0] not in "ZX")


def naming(text: str) -> dict[int, str]:
    """Running processes whose command line contains `text`, with that command line."""
    found = {}
    for pid in _pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and running([pid]):
            found[pid] = cmdline.strip()
    return found


def describe(pids: Iterable[int]) -> dict[int, str]:
    """Command lines of `pids`, for assertion messages."""
    described = {}
    for pid in pids:
        try:
            described[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            described[pid] = "(gone)"
    return described


async def wait_gone(pids: Iterable[int], limit: float) -> list[int]:
    """Wait (on pidfds) until the processes exit, `limit` seconds in all; return those left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        exited = asyncio.Event()
        loop.add_reader(pidfd, exited.set)
        try:
            await asyncio.wait_for(exited.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    return running(pids)


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


async def read_until(
    stream: asyncio.StreamReader, wanted: Iterable[str], output: list[str], limit: float
) -> None:
    """Read lines into `output` until each of `wanted` has appeared in one; fail at EOF/limit."""
    missing = set(wanted)
    try:
        async with asyncio.timeout(limit):
            while missing:
                line = (await stream.readline()).decode(errors="replace")
                if not line:
                    break
                output.append(line)
                missing = {text for text in missing if text not in line}
    except TimeoutError:
        pass
    if missing:
        tail = "".join(output[-60:])
        raise AssertionError(f"never printed {sorted(missing)}; last output:\n{tail}")


async def read_to_end(stream: asyncio.StreamReader, output: list[str], limit: float) -> bool:
    """Read the rest of the output (every writer has closed it); False if `limit` ran out."""
    try:
        async with asyncio.timeout(limit):
            while line := await stream.readline():
                output.append(line.decode(errors="replace"))
    except TimeoutError:
        return False
    return True


@dataclass
class Stack:
    """A started `worker.py --dev` or `make demo` and what it runs on."""

    process: asyncio.subprocess.Process
    data_dir: Path
    ports: tuple[int, ...]
    output: list[str]
    seen: dict[int, int] = field(default_factory=dict)
    """Processes of the stack seen so far, by pid, with their start times (to kill after a
    failure: one reparented to init is no longer a descendant)."""

    def look(self) -> set[int]:
        """The stack's processes now (recorded in `seen`)."""
        pids = descendants(self.process.pid)
        for pid in pids:
            if (stat := _stat(pid)) is not None:
                self.seen.setdefault(pid, stat[2])
        return pids

    @property
    def text(self) -> str:
        return "".join(self.output)

    async def wait_for(self, *texts: str, limit: float) -> None:
        """Read the output until each of `texts` has been printed."""
        assert self.process.stdout is not None
        await read_until(self.process.stdout, texts, self.output, limit)
        self.look()

    async def stop_with(self, sig: signal.Signals, *, group: bool = False) -> None:
        """Send `sig` (to the process group, as a terminal's Ctrl-C does, when `group`); wait
        until every process the stack ran is gone."""
        started = self.look()
        (os.killpg if group else os.kill)(self.process.pid, sig)
        assert self.process.stdout is not None
        ended = await read_to_end(self.process.stdout, self.output, STOP_LIMIT)
        assert ended, f"still writing {STOP_LIMIT:.0f} s after {sig.name}:\n{self.text[-3000:]}"
        await asyncio.wait_for(self.process.wait(), STOP_LIMIT)
        left = await wait_gone(started, STOP_LIMIT)
        assert left == [], f"left running after {sig.name}: {describe(left)}\n{self.text[-3000:]}"

    def assert_nothing_left(self, *, except_naming: str | None = None) -> None:
        """No process names the data dir (servers, sandbox supervisors) and the ports are free."""
        left = {
            pid: cmdline
            for pid, cmdline in naming(str(self.data_dir)).items()
            if except_naming is None or except_naming not in cmdline
        }
        assert left == {}, f"still running: {left}\n{self.text[-3000:]}"
        assert not any(port_taken(port) for port in self.ports), self.ports


def worker_env(**values: str) -> dict[str, str]:
    """The environment for a qai process a test starts: this one's without any qai, model,
    Temporal or database setting (the machine's must not leak in), plus `values`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "QAI_", "TEMPORAL_", "DATABASE_URL"))
    }
    env.update(values)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python worker.py` (production mode) in a session of its own, its output in `log`."""
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _env(data_dir: Path, ports: tuple[int, ...], **extra: str) -> dict[str, str]:
    defaults = {
        "QAI_DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports[0]}",
        "QAI_TEMPORAL_UI_PORT": str(ports[1]),
        "QAI_API_PORT": str(ports[2]),
        "QAI_PREVIEW_PORT": str(ports[3]),
        "QAI_METRICS_PORT": str(ports[4]),
        "QAI_SANDBOX_NETWORK": "none",
        "QAI_SANDBOX_POOL_SIZE": "0",
        "PYTHONUNBUFFERED": "1",
    }
    return worker_env(**{**defaults, **extra})


@contextlib.asynccontextmanager
async def started(argv: list[str], data_dir: Path, **env: str) -> AsyncIterator[Stack]:
    """Start `argv` in a session of its own (signals reach only it); kill what is left after."""
    ports = tuple(free_port() for _ in range(5))
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=_env(data_dir, ports, **env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=default_stop_signals,
    )
    stack = Stack(process, data_dir, ports, [])
    try:
        yield stack
    except BaseException:
        await _kill_leftovers(stack)
        raise


async def _kill_leftovers(stack: Stack) -> None:
    """After a failed test: the stack's sandboxes (torn down properly), then its processes."""
    if (stack.data_dir / "sandboxes").is_dir():
        from sandboxes.local.backend import LocalBackend

        backend = LocalBackend(Settings(_env_file=None, qai_data_dir=stack.data_dir))  # type: ignore[call-arg]
        for sandbox_id in backend.list_ids():
            await backend.kill(sandbox_id)
    stack.look()
    for pid in set(stack.seen) | set(naming(str(stack.data_dir))):
        stat = _stat(pid)
        if stat is not None and stat[2] == stack.seen.get(pid, stat[2]):  # not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if stack.process.returncode is None:
        await stack.process.wait()


def link_project_templates(data_dir: Path) -> None:
    """Give `data_dir` the project's template cache (built by `make setup`), so a stack there
    needs no build of its own."""
    from sandboxes.template import ensure_template

    built = ensure_template(Settings(_env_file=None, qai_data_dir=ROOT / ".qai"))  # type: ignore[call-arg]
    (data_dir / "templates").symlink_to(built.parent, target_is_directory=True)
