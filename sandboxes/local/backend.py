"""The local sandbox backend: bubblewrap + overlayfs + cgroups, one detached supervisor per sandbox.

Needs root (for the overlay/tmpfs mounts and cgroups) and `bwrap` (Debian's bubblewrap). Sandbox
state lives under `<QAI_DATA_DIR>/sandboxes/<id>/`, so any process can reconnect by id; the first
create/connect of a backend object sweeps what crashed or expired runs left behind. A backend that
is `start()`ed (the worker's) also keeps a warm pool of the default template (`pool.py`) until
`close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from runtime.settings import SandboxNetwork, Settings
from sandboxes.base import (
    SandboxBackend,
    SandboxNotFoundError,
    SandboxStartTimeoutError,
    SandboxTemplateError,
    SandboxUnavailableError,
)
from sandboxes.local import cgroups
from sandboxes.local.layout import (
    ID_PATTERN,
    Layout,
    cgroup_tag,
    process_alive,
    read_state,
    sandboxes_root,
    state_alive,
    update_state,
    write_state,
)
from sandboxes.local.pool import POOL_TEMPLATE, WarmPool
from sandboxes.local.registries import discover
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.local.supervisor import failed_log, teardown
from sandboxes.local.templates import LocalTemplate, built_template
from sandboxes.snapshot import template_index

log = structlog.get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR = Path(__file__).with_name("supervisor.py")
READY_TIMEOUT = 30.0
KILL_WAIT = 10.0
FAILED_LOG_DAYS = 1
UNBORN_GRACE = 60.0
"""A sandbox dir younger than this with no supervisor yet may be another process's create."""


class LocalBackend(SandboxBackend):
    def __init__(
        self,
        settings: Settings,
        *,
        templates: Mapping[str, LocalTemplate] | None = None,
        network: SandboxNetwork | None = None,
        metadata_defaults: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            default_timeout=float(settings.qai_sandbox_timeout),
            metadata_defaults=dict(metadata_defaults or {}),
        )
        self.settings = settings
        self.network = SandboxNetwork(network or settings.qai_sandbox_network)
        self.templates: dict[str, LocalTemplate] = dict(templates or {})
        self.root = sandboxes_root(settings.data_dir)
        self._started = False
        self._start_lock = asyncio.Lock()
        self.pool = WarmPool(self, settings.qai_sandbox_pool_size)
        self._indexes: dict[str, dict[str, str]] = {}
        self.owned: set[str] = set()
        """Sandboxes this object created for a caller or claimed from the pool, not yet killed
        (`kill_owned`); reconnected ones are not included: another process may own them."""

    # ------------------------------------------------------------ startup

    def check_host(self) -> None:
        if os.geteuid() != 0:
            raise SandboxUnavailableError(
                "the local sandbox backend needs root (overlay/tmpfs mounts and cgroups); "
                "run the worker as root or set QAI_SANDBOX_BACKEND=e2b",
                retryable=False,
            )
        if shutil.which("bwrap") is None:
            raise SandboxUnavailableError(
                "bubblewrap is not installed: apt-get install bubblewrap", retryable=False
            )

    async def start(self) -> None:
        """Prepare, then keep the warm pool filled in the background until `close()`."""
        await self._prepare()
        self.pool.start()

    async def close(self) -> None:
        """Stop refilling the pool; its sandboxes stay up for the next worker to hand out."""
        await self.pool.close()

    async def kill_owned(self) -> list[str]:
        """Stop the pool, kill its unclaimed members this object started, and every sandbox it
        created or claimed (`worker.py --dev` stopping); return the ids killed."""
        killed = await self.pool.discard_started()
        for sandbox_id in sorted(self.owned):
            if await self.kill(sandbox_id):
                killed.append(sandbox_id)
        return killed

    async def _prepare(self) -> None:
        """Check the host, sweep leftovers, and read the registry config (once per object)."""
        async with self._start_lock:
            if self._started:
                return
            self.check_host()
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            await asyncio.to_thread(self.sweep)
            if self.network == SandboxNetwork.REGISTRY:
                await asyncio.to_thread(discover)
            self._started = True

    def sweep(self) -> list[str]:
        """Tear down sandboxes that expired or whose supervisor died, and orphaned cgroups."""
        removed = []
        now = time.time()
        present = set()
        for path in self.root.iterdir() if self.root.is_dir() else []:
            if not ID_PATTERN.match(path.name):
                continue
            present.add(path.name)
            layout = Layout(path)
            try:
                state = read_state(layout.state)
            except (OSError, ValueError):
                state = {}
            supervisor = state.get("supervisor") or {}
            alive = process_alive(supervisor.get("pid"), supervisor.get("start_time"))
            if alive and now < state.get("expires_at", 0) + 5:
                continue
            if not alive and not supervisor and now - path.stat().st_mtime < UNBORN_GRACE:
                continue
            if alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(supervisor["pid"], signal.SIGKILL)
            teardown(layout)
            removed.append(path.name)
        for failed in self.root.glob("sbx-*.failed.log"):
            if now - failed.stat().st_mtime > FAILED_LOG_DAYS * 86400:
                failed.unlink(missing_ok=True)
        tag = cgroup_tag(self.settings.data_dir)
        for name in cgroups.leftover_ids():
            prefix, _, sandbox_id = name.partition("-")
            if prefix == tag and sandbox_id not in present:
                cgroups.SandboxCgroups(name).remove()
                removed.append(sandbox_id)
        if removed:
            log.info("sandboxes swept", sandboxes=sorted(set(removed)))
        return removed

    async def template(self, name: str) -> LocalTemplate:
        """A template given to the constructor, else one from `sandbox-templates/` (built once)."""
        if name not in self.templates:
            self.templates[name] = await asyncio.to_thread(built_template, self.settings, name)
        return self.templates[name]

    async def template_index(self, template: str | None = None) -> dict[str, str]:
        spec = await self.template(template or POOL_TEMPLATE)
        if spec.name not in self._indexes:
            self._indexes[spec.name] = await asyncio.to_thread(template_index, spec.directory)
        return self._indexes[spec.name]

    # ------------------------------------------------------------ interface

    async def create(
        self,
        template: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> LocalSandbox:
        """A warm sandbox from the pool when it has one of this template, else a new one."""
        await self._prepare()
        spec = await self.template(template or POOL_TEMPLATE)
        timeout = timeout or self.default_timeout
        if self.pool.serves(spec.name):
            sandbox = await self.pool.claim(timeout, metadata)
            self.pool.wake()
            if sandbox is not None:
                self.owned.add(sandbox.sandbox_id)
                return sandbox
        sandbox = await self.launch(spec, timeout=timeout, metadata=metadata)
        self.owned.add(sandbox.sandbox_id)
        return sandbox

    async def launch(
        self,
        spec: LocalTemplate,
        *,
        timeout: float,
        metadata: Mapping[str, str] | None = None,
        pooled: bool = False,
    ) -> LocalSandbox:
        """Start a new sandbox (marked as an unclaimed pool member when `pooled`)."""
        sandbox_id = f"sbx-{secrets.token_hex(6)}"
        layout = Layout(self.root / sandbox_id)
        layout.root.mkdir(mode=0o700)
        if pooled:
            (layout.root / "pooled").touch()
        now = time.time()
        state: dict[str, Any] = {
            "id": sandbox_id,
            "template": spec.name,
            "template_dir": str(spec.directory.resolve()),
            "start_cmd": spec.start_cmd,
            "template_port": spec.port,
            "template_ready_path": spec.ready_path,
            "template_env": dict(spec.env),
            "created": now,
            "expires_at": now + timeout,
            "network": self.network.value,
            "memory_mb": self.settings.qai_sandbox_memory_mb,
            "pids": self.settings.qai_sandbox_pids,
            "disk_mb": self.settings.qai_sandbox_disk_mb,
            "metadata": {**self.metadata_defaults, **(metadata or {})},
            "ports": {},
        }
        if self.network == SandboxNetwork.REGISTRY:
            registries = discover()
            state["npm_registry"] = registries.npm_registry
            state["registry_hosts"] = sorted(registries.hosts)
        write_state(layout.state, state)
        self._spawn_supervisor(layout)
        try:
            await self._wait_ready(layout)
        except BaseException:
            await self.kill(sandbox_id)
            raise
        log.info("sandbox created", sandbox_id=sandbox_id, template=spec.name, pooled=pooled)
        return LocalSandbox(self, layout, read_state(layout.state))

    def _spawn_supervisor(self, layout: Layout) -> None:
        with open(layout.log, "ab") as out:
            launcher = subprocess.Popen(
                [sys.executable, "-I", "-S", str(SUPERVISOR), str(layout.root)],
                cwd=PROJECT_ROOT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        launcher.wait()  # the supervisor forks and its parent exits at once

    async def _wait_ready(self, layout: Layout) -> None:
        """Wait for envd and the template's port.

        A supervisor that dies first means the template (or the host) cannot start a sandbox:
        another attempt would fail the same way. Still starting at the deadline only means a
        loaded host, so that error is retryable. The supervisor's log goes into the error for
        operators; users are shown plain words (`activities.errors`).
        """
        ready = layout.ready
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists() or not self._ports_ready(layout):
            if not layout.state.exists() or self._died(layout):
                tail = _tail(layout.log) or _tail(failed_log(layout))
                raise SandboxTemplateError(
                    f"sandbox {layout.sandbox_id} failed to start: {tail or 'no output'}"
                )
            if time.monotonic() > deadline:
                raise SandboxStartTimeoutError(
                    f"sandbox {layout.sandbox_id} was not ready within {READY_TIMEOUT:g} s: "
                    f"{_tail(layout.log) or 'no output'}"
                )
            await asyncio.sleep(0.003)

    @staticmethod
    def _ports_ready(layout: Layout) -> bool:
        state = read_state(layout.state)
        port = state.get("template_port")
        return port is None or str(port) in state.get("ports", {})

    @staticmethod
    def _died(layout: Layout) -> bool:
        try:
            supervisor = read_state(layout.state).get("supervisor")
        except (OSError, ValueError):
            return True
        return bool(supervisor) and not process_alive(supervisor["pid"], supervisor["start_time"])

    async def connect(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,
    ) -> LocalSandbox:
        await self._prepare()
        if not ID_PATTERN.match(sandbox_id):
            raise SandboxNotFoundError(f"no sandbox {sandbox_id!r} (not a local sandbox id)")
        layout = Layout(self.root / sandbox_id)
        try:
            state = read_state(layout.state)
        except (OSError, ValueError):
            raise SandboxNotFoundError(
                f"no sandbox {sandbox_id} (killed, expired and reaped, or never created here)"
            ) from None
        if not state_alive(state):
            await self.kill(sandbox_id)
            raise SandboxNotFoundError(f"sandbox {sandbox_id} expired or stopped; it was reaped")
        extended = time.time() + (timeout or self.default_timeout)

        def extend(current: dict[str, Any]) -> None:
            current["expires_at"] = max(current["expires_at"], extended)

        state = update_state(layout.state, extend)
        return LocalSandbox(self, layout, state)

    async def find(self, metadata: Mapping[str, str]) -> list[str]:
        wanted = metadata.items()
        found = []
        for sandbox_id in self.list_ids():
            try:
                state = read_state(Layout(self.root / sandbox_id).state)
            except (OSError, ValueError):
                continue  # being created or torn down
            if wanted <= state.get("metadata", {}).items() and state_alive(state):
                found.append(sandbox_id)
        return found

    async def kill(self, sandbox_id: str) -> bool:
        """Stop the supervisor (which tears down) and make sure nothing remains."""
        if not ID_PATTERN.match(sandbox_id):
            return False
        self.owned.discard(sandbox_id)
        layout = Layout(self.root / sandbox_id)
        if not layout.root.exists():
            return False
        try:
            supervisor = read_state(layout.state).get("supervisor") or {}
        except (OSError, ValueError):
            supervisor = {}
        pid = supervisor.get("pid")
        if process_alive(pid, supervisor.get("start_time")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + KILL_WAIT
            while process_alive(pid, supervisor.get("start_time")):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                await asyncio.sleep(0.01)
        await asyncio.to_thread(teardown, layout)
        log.info("sandbox killed", sandbox_id=sandbox_id)
        return True

    def host_counts(self) -> tuple[int, int]:
        """Live and pooled sandboxes on this host (every worker on it shares the directory)."""
        ready = [
            sandbox_id
            for sandbox_id in self.list_ids()
            if (self.root / sandbox_id / "ready").exists()
        ]
        return len(ready), sum((self.root / sandbox_id / "pooled").exists() for sandbox_id in ready)

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if ID_PATTERN.match(p.name))


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
