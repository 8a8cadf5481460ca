"""Child processes that must never outlive qai: process groups, parent-death signals, ports."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class PortInUseError(RuntimeError):
    """A port qai wants to listen on is taken; names the port and the setting to change."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; free it or change {setting}")
        self.host = host
        self.port = port
        self.setting = setting


def parent_death_signal(sig: signal.Signals) -> Callable[[], None]:
    """A `preexec_fn` making the kernel send `sig` to the child when its parent dies.

    A backstop for the one case cleanup code cannot handle: qai itself killed
    with SIGKILL. It runs after the uid switch (which would otherwise clear it).
    `prctl` is looked up here, in the parent: the child must not load libraries.
    """
    prctl = _libc().prctl
    parent = os.getpid()

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), sig)

    return _set


def die_with_parent(sig: signal.Signals) -> None:
    """Have the kernel send `sig` to this process when its parent exits.

    For a program whose parent may die without stopping it first (`make demo` when make is
    killed): the signal lets it stop its own children instead of leaving them running. If the
    parent is already gone when this runs, `sig` is sent at once.
    """
    parent = os.getppid()
    if _libc().prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, `kill` and a closed terminal: each stops a qai program cleanly."""


def stop_signals() -> list[signal.Signals]:
    """The stop signals this process should handle: those it did not inherit as ignored.

    `nohup` ignores SIGHUP and a shell ignores SIGINT for background jobs; overriding that
    would stop a program its user meant to survive the terminal.
    """
    return [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]


class StopRequested(BaseException):
    """Raised in the main thread by a stop signal (see `raise_on_stop_signals`).

    A BaseException, like KeyboardInterrupt, so that `except Exception` lets it through to the
    cleanup code.
    """

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"stopped by {sig.name}")
        self.signal = sig


def ignore_stop_signals() -> None:
    """Ignore further stop signals: a second Ctrl-C must not cut a cleanup short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def raise_on_stop_signals() -> None:
    """Turn the first SIGINT, SIGTERM or SIGHUP into `StopRequested` (synchronous programs).

    Later ones are ignored, so the cleanup that follows runs to its end.
    """

    def handler(signum: int, _frame: object) -> None:
        ignore_stop_signals()
        raise StopRequested(signal.Signals(signum))

    for sig in stop_signals():
        signal.signal(sig, handler)


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Fail before starting a server whose port is taken, naming the setting to change."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError(host, port, setting) from None
            raise


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and throwaway servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_process_group(
    process: asyncio.subprocess.Process,
    *,
    sig: signal.Signals = signal.SIGTERM,
    grace: float = 10.0,
) -> int:
    """Send `sig` to the child's whole process group, then SIGKILL it after `grace` seconds.

    The child must have been started as a group leader (`process_group=0`). If
    this coroutine is cancelled while waiting, the group is killed before the
    cancellation propagates, so no process is left behind.
    """
    if process.returncode is None:
        _signal_group(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            pass
        except BaseException:
            _signal_group(process.pid, signal.SIGKILL)
            raise
    # Kill whatever is left in the group (grandchildren, or the leader after grace).
    _signal_group(process.pid, signal.SIGKILL)
    return await process.wait()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(log is empty)"


class LockHeldError(RuntimeError):
    """Another live process holds the lock; `holder` is the pid it wrote."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path = path
        self.holder = holder


class PidLock:
    """An exclusive `flock` on a file holding our pid, kept until `release()`.

    The kernel drops it when the process dies however it dies, so a crash never
    leaves a stale lock behind (unlike a bare pid file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        if self._file is not None:
            return
        lock_file = self.path.open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise LockHeldError(self.path, holder) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        lock_file, self._file = self._file, None
        if lock_file is not None:
            lock_file.close()  # closing the descriptor drops the flock
