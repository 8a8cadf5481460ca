"""Per-host slots for CPU-heavy steps (checks, browser pages, first compiles, builds).

Eight runs that all start `tsc` and a route compile at the same moment make every one of them
slow; a few slots, taken in turn, make a few runs wait briefly instead. Slots are per host,
because the sandboxes are: each is a lock file under `<data dir>/slots/`, held with `flock`, so
every worker process of a host (and the warm pool) shares them, and a process that dies frees
its slots at once. Model calls never take a slot.

    async with host_slots(settings).hold("check", on_wait=say_we_wait):
        ...  # at most QAI_CPU_SLOTS of these run on this host at a time
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog

from runtime.settings import Settings

log = structlog.get_logger(__name__)

WAIT_PHASES = {
    "check": "waiting for a check slot",
    "browser": "waiting for a browser slot",
    "compile": "waiting for a compile slot",
    "build": "waiting for a build slot",
}
"""The run phase shown while a step waits, by kind of step."""
POLL_SECONDS = 0.1


class HostSlots:
    """`count` slots shared by every process using `directory`."""

    def __init__(self, directory: Path, count: int, *, poll: float = POLL_SECONDS) -> None:
        if count < 1:
            raise ValueError("a host needs at least one slot")
        self.directory = directory
        self.count = count
        self.poll = poll
        self._queue = asyncio.Lock()
        """This process's waiters, first come first served (asyncio locks are FIFO)."""

    def _try_take(self) -> int | None:
        """The descriptor of a free slot's lock file, now held; None when all are taken."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            fd = os.open(self.directory / f"{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @asynccontextmanager
    async def hold(
        self, kind: str, *, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[float]:
        """Hold one slot for the block; yields the seconds waited for it.

        `on_wait` is awaited once, when the slot is not free at once (to show the wait).
        """
        started = time.monotonic()
        fd = None if self._queue.locked() else self._try_take()
        if fd is None:
            if on_wait is not None:
                await on_wait()
            async with self._queue:
                while (fd := self._try_take()) is None:  # noqa: ASYNC110 - freed by other processes too
                    await asyncio.sleep(self.poll)
            waited = time.monotonic() - started
            log.info("cpu slot taken after a wait", kind=kind, seconds=round(waited, 2))
        else:
            waited = 0.0
        try:
            yield waited
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


_HOSTS: dict[tuple[Path, int, int], HostSlots] = {}


def slot_count(settings: Settings) -> int:
    """QAI_CPU_SLOTS, or the host's number of cores."""
    return settings.qai_cpu_slots or os.cpu_count() or 1


def host_slots(settings: Settings) -> HostSlots:
    """This host's slots (one object per data dir, count and event loop in a process)."""
    directory, count = settings.data_dir / "slots", slot_count(settings)
    key = (directory, count, id(asyncio.get_running_loop()))
    if key not in _HOSTS:
        _HOSTS[key] = HostSlots(directory, count)
    return _HOSTS[key]
