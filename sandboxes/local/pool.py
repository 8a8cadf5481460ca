"""A warm pool of local sandboxes: started, with the dev server's first page already compiled.

Next.js 15 keeps no turbopack cache on disk, so a new dev server needs seconds to compile `/`.
The pool keeps `QAI_SANDBOX_POOL_SIZE` sandboxes of the default template running and warmed, and
`create()` hands one out at once. Pool sandboxes are ordinary sandboxes (state on disk, reaped by
their own timeout, swept like any other), marked by files in their directory:

    pooled   unclaimed pool member; whoever renames it to `claimed` owns the sandbox (atomic
             across processes, so two workers never get the same one)
    warm     its preview answered `/` with 200 through the host relay; only these are handed out
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from runtime.settings import SandboxNetwork, Settings
from runtime.slots import host_slots
from sandboxes.base import SandboxUnavailableError
from sandboxes.local.layout import ID_PATTERN, Layout, read_state, state_alive, update_state
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.local.templates import LocalTemplate

log = structlog.get_logger(__name__)

POOL_TEMPLATE = "nextjs"
POOL_TIMEOUT = 3600.0
"""A pool sandbox's lifetime; it is replaced shortly before it expires."""
REPLACE_BEFORE = 120.0
"""Pool sandboxes with less time left are neither handed out nor counted, but replaced."""
WARM_TIMEOUT = 300.0
RECHECK = 30.0
"""Seconds between rounds when nothing wakes the pool (other processes claim from it too)."""
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0


@dataclass(frozen=True)
class PoolEntry:
    layout: Layout
    warm: bool

    @property
    def sandbox_id(self) -> str:
        return self.layout.sandbox_id


def _take(layout: Layout) -> bool:
    """Claim an unclaimed pool sandbox; True for exactly one caller across all processes."""
    try:
        os.rename(layout.root / "pooled", layout.root / "claimed")
    except FileNotFoundError:
        return False
    return True


class PoolBackend(Protocol):
    """What the pool needs of the local backend that owns it (the backend needs the pool)."""

    root: Path
    settings: Settings
    network: SandboxNetwork
    metadata_defaults: dict[str, str]

    async def template(self, name: str) -> LocalTemplate: ...

    async def launch(
        self, spec: LocalTemplate, *, timeout: float, pooled: bool
    ) -> LocalSandbox: ...

    async def kill(self, sandbox_id: str) -> bool: ...


class WarmPool:
    """Keeps `size` warm sandboxes of `template` for one backend; 0 turns the pool off."""

    def __init__(self, backend: PoolBackend, size: int, template: str = POOL_TEMPLATE) -> None:
        self.backend = backend
        self.size = size
        self.template = template
        self.rounds = 0
        """Completed refill rounds (tests wait on it)."""
        self.started: set[str] = set()
        """Ids of the sandboxes this pool started (`discard_started` kills those unclaimed)."""
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def serves(self, template: str) -> bool:
        return self.size > 0 and template == self.template

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start refilling in the background (no-op with size 0 or when already running)."""
        if self.size > 0 and not self.running:
            self._task = asyncio.create_task(self._run(), name="sandbox-pool")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Stop refilling. The pool's sandboxes stay up: a restarted worker hands them out."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def discard_started(self) -> list[str]:
        """Stop refilling, then kill the unclaimed sandboxes this pool started; return their ids.

        For `worker.py --dev`, whose stop leaves nothing running. A member another process has
        claimed meanwhile is that process's sandbox now, and stays.
        """
        await self.close()
        discarded = []
        for sandbox_id in sorted(self.started):
            if await self._discard(Layout(self.backend.root / sandbox_id), "its pool stopped"):
                discarded.append(sandbox_id)
        self.started.clear()
        return discarded

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            self._wake.clear()
            try:
                await self.refill()
            except Exception as error:
                log.warning(
                    "sandbox pool refill failed",
                    reason=f"{type(error).__name__}: {error}",
                    retry_in=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RECHECK)

    # ------------------------------------------------------------ members

    def _matches(self, state: dict[str, Any], spec: LocalTemplate) -> bool:
        """Made by this configuration (a changed setting must not hand out an old sandbox)."""
        settings = self.backend.settings
        return (
            state.get("template_dir") == str(spec.directory.resolve())
            and state.get("network") == self.backend.network.value
            and state.get("memory_mb") == settings.qai_sandbox_memory_mb
            and state.get("pids") == settings.qai_sandbox_pids
            and state.get("disk_mb") == settings.qai_sandbox_disk_mb
        )

    def entries(self, spec: LocalTemplate) -> tuple[list[PoolEntry], list[Layout]]:
        """Usable unclaimed members (warm first, oldest first), and dead or expiring ones."""
        usable: list[tuple[bool, float, PoolEntry]] = []
        stale: list[Layout] = []
        root = self.backend.root
        for path in root.iterdir() if root.is_dir() else []:
            layout = Layout(path)
            if not ID_PATTERN.match(path.name) or not (path / "pooled").exists():
                continue
            try:
                state = read_state(layout.state)
            except (OSError, ValueError):
                continue
            if not self._matches(state, spec) or not layout.ready.exists():
                continue  # another configuration's, or still being created
            if not state_alive(state, margin=REPLACE_BEFORE):
                stale.append(layout)
                continue
            warm = (path / "warm").exists()
            usable.append((not warm, state["created"], PoolEntry(layout, warm)))
        usable.sort(key=lambda item: item[:2])
        return [entry for *_, entry in usable], stale

    async def _discard(self, layout: Layout, why: str) -> bool:
        """Kill an unclaimed member; False if it was claimed (or removed) first."""
        if not _take(layout):
            return False
        log.info("pool sandbox discarded", sandbox_id=layout.sandbox_id, reason=why)
        await self.backend.kill(layout.sandbox_id)
        return True

    async def claim(
        self,
        timeout: float,
        metadata: Mapping[str, str] | None,
    ) -> LocalSandbox | None:
        """A warm pool sandbox, now the caller's (its timeout and metadata), or None."""
        spec = await self.backend.template(self.template)
        usable, _ = self.entries(spec)
        merged = {**self.backend.metadata_defaults, **(metadata or {})}
        for entry in usable:
            if not entry.warm or not _take(entry.layout):
                continue
            change = {"expires_at": time.time() + timeout, "metadata": merged}
            try:
                state = update_state(entry.layout.state, lambda s, c=change: s.update(c))
            except (OSError, ValueError):
                continue  # reaped meanwhile
            sandbox = LocalSandbox(self.backend.kill, entry.layout, state)
            if not await sandbox.is_running():
                await self.backend.kill(entry.sandbox_id)
                continue
            for marker in ("claimed", "warm"):
                (entry.layout.root / marker).unlink(missing_ok=True)
            log.info("sandbox claimed from the pool", sandbox_id=entry.sandbox_id)
            return sandbox
        return None

    # ------------------------------------------------------------ refill

    async def refill(self) -> None:
        """One round: drop stale and surplus members, warm the rest, create what is missing."""
        spec = await self.backend.template(self.template)
        usable, stale = self.entries(spec)
        for layout in stale:
            await self._discard(layout, "stopped or about to expire")
        for entry in usable[self.size :]:
            await self._discard(entry.layout, f"more than {self.size} in the pool")
        for entry in usable[: self.size]:
            if not entry.warm:
                await self._warm(entry.layout, spec)
        while (layout := await self._add(spec)) is not None:
            await self._warm(layout, spec)

    async def _add(self, spec: LocalTemplate) -> Layout | None:
        """Create one member if the pool is short, under a lock shared by all processes."""
        lock = os.open(self.backend.root / "pool.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            if len(self.entries(spec)[0]) >= self.size:
                return None
            if self.backend.live_count() >= self.backend.settings.qai_sandbox_max_live:
                return None  # the host is full: runs come first, the pool refills later
            sandbox = await self.backend.launch(spec, timeout=POOL_TIMEOUT, pooled=True)
            self.started.add(sandbox.sandbox_id)
            log.info("pool sandbox started", sandbox_id=sandbox.sandbox_id)
            return Layout(self.backend.root / sandbox.sandbox_id)
        finally:
            os.close(lock)

    async def _warm(self, layout: Layout, spec: LocalTemplate) -> None:
        """Request `/` through the preview relay until it answers 200, then mark it warm."""
        sandbox = LocalSandbox(self.backend.kill, layout, read_state(layout.state))
        url = sandbox.preview_url(spec.port or 3000)
        status: int | str = "no answer"
        slot = host_slots(self.backend.settings).hold("compile")  # the first compile is heavy
        async with slot, httpx.AsyncClient(timeout=120) as client:
            started = time.monotonic()  # the wait for the slot does not count against it
            deadline = started + WARM_TIMEOUT
            while (layout.root / "pooled").exists():
                try:
                    status = (await client.get(url)).status_code
                except httpx.HTTPError as error:
                    status = f"{type(error).__name__}: {error}"
                if status == 200:
                    (layout.root / "warm").touch()
                    log.info(
                        "pool sandbox warm",
                        sandbox_id=layout.sandbox_id,
                        seconds=round(time.monotonic() - started, 2),
                    )
                    return
                if time.monotonic() > deadline or not await sandbox.is_running():
                    await self._discard(layout, "warm-up failed")
                    raise SandboxUnavailableError(
                        f"pool sandbox {layout.sandbox_id}: {url} gave no 200 for /"
                        f" within {WARM_TIMEOUT:g} s (last: {status})"
                    )
                await asyncio.sleep(0.25)
