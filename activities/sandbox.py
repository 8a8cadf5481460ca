"""Sandbox lifecycle: get one (reusing the project's while it lives), hydrate it, keep it alive."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from temporalio import activity

from activities.errors import sandbox_failure
from activities.events import run_phase
from activities.heartbeat import heartbeating
from activities.services import Services
from agent.tools import bound
from conversation import load_project_conversation_context
from runtime import metrics
from runtime.preview_urls import preview_url
from runtime.settings import SandboxBackendName
from sandboxes.base import (
    INSTALL_COMMAND,
    CommandFailedError,
    Sandbox,
    SandboxError,
    SandboxNotFoundError,
    WriteEntry,
)
from sandboxes.snapshot import WorkspaceSnapshot
from storage import previews, snapshots

PREVIEW_PORT = 3000


class WaitProgress:
    """The run's progress line while its sandbox waits for room on this host (`waiting`), and
    back to `sandbox` once it got some."""

    def __init__(self, services: Services, run_id: uuid.UUID) -> None:
        self._services = services
        self._run_id = run_id
        self._reports = 0

    async def __call__(self, words: str) -> None:
        activity.logger.info(words)
        await self._phase("waiting")

    async def done(self) -> None:
        if self._reports:
            await self._phase("sandbox")

    async def _phase(self, phase: str) -> None:
        self._reports += 1
        await run_phase(
            self._services.db,
            self._run_id,
            phase,
            max_iterations=self._services.settings.qai_max_iterations,
            key=f"{phase}:{activity.info().activity_id}:{self._reports}",
        )


REQUEST_KEY = "qai_request"
"""Sandbox metadata naming the activity execution that created it, so a retry can find it."""


class AcquireSandboxInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    sandbox_id: str | None = None
    """The project's sandbox from an earlier run, reused while it is alive."""


class SandboxLease(BaseModel):
    sandbox_id: str
    url: str
    """The project's stable preview URL (the gateway's), which users see."""
    fresh: bool
    """True when a new sandbox was created (it then needs the latest fragment's files)."""
    host_id: str | None = None
    """The worker host holding the sandbox; None in leases from before host queues."""
    task_queue: str | None = None
    """That host's own task queue: every activity touching the sandbox must run there."""


class HydrateSandboxInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    sandbox_id: str


class HydrateResult(BaseModel):
    files_written: int


class RestoreWorkspaceInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    """The run the sandbox is for: its own snapshot counts, later messages' do not."""
    sandbox_id: str


class RestoredWorkspace(BaseModel):
    files: int
    deleted: int
    installed: bool
    """`npm install` ran because the package files differ from the template's."""
    problem: str | None = None
    """What could not be brought back (a failed install), in words for the model."""


class ExtendSandboxInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str
    timeout_seconds: int | None = None
    run_id: uuid.UUID | None = None
    """Set when a finished run checks its preview: the run's `verifying` phase."""


class SandboxActivities:
    def __init__(self, services: Services, host_queue: str) -> None:
        self._services = services
        self._host_queue = host_queue
        """The task queue only this worker's host polls (sandboxes are local to a host)."""

    async def lease(self, project_id: uuid.UUID, sandbox: Sandbox, *, fresh: bool) -> SandboxLease:
        """Make `sandbox` the project's preview, and hand it out under the stable URL."""
        settings = self._services.settings
        async with self._services.db.session() as session:
            await previews.record_live(
                session,
                project_id=project_id,
                sandbox_id=sandbox.sandbox_id,
                host_id=settings.host_id,
                host_address=settings.host_address,
                target=sandbox.preview_url(PREVIEW_PORT),
            )
            await session.commit()
        # A local sandbox lives on this host alone; an E2B sandbox is reachable from any.
        local = settings.qai_sandbox_backend == SandboxBackendName.LOCAL
        return SandboxLease(
            sandbox_id=sandbox.sandbox_id,
            url=preview_url(settings, project_id),
            fresh=fresh,
            host_id=settings.host_id if local else None,
            task_queue=self._host_queue if local else None,
        )

    async def obtain(
        self, project_id: uuid.UUID, sandbox_id: str | None, metadata: dict[str, str]
    ) -> tuple[Sandbox, bool]:
        """The project's sandbox while it lives, else a new one; and whether it is new.

        A retry of the same activity finds the sandbox its lost attempt created (by
        `REQUEST_KEY`), so no retry leaves a spare sandbox running.
        """
        backend = self._services.sandboxes
        timeout = self._services.settings.qai_sandbox_timeout
        info = activity.info()
        request = f"{info.workflow_id}/{info.activity_id}"
        if sandbox_id:
            try:
                sandbox = await backend.connect(sandbox_id, timeout=timeout)
                if await sandbox.is_running():
                    return sandbox, False
            except SandboxNotFoundError:
                activity.logger.info("sandbox expired; creating a new one")
        sandbox = await self._created_earlier(request)
        if sandbox is None:
            reporter = self._report_wait(metadata.get("run_id"))
            async with heartbeating(), metrics.timed(metrics.SANDBOX_CREATE_SECONDS):
                sandbox = await backend.create(
                    timeout=timeout,
                    metadata={
                        "project_id": str(project_id),
                        **metadata,
                        REQUEST_KEY: request,
                    },
                    on_wait=reporter,
                )
            if reporter is not None:
                await reporter.done()
        return sandbox, True

    def _report_wait(self, run_id: str | None) -> WaitProgress | None:
        return None if run_id is None else WaitProgress(self._services, uuid.UUID(run_id))

    @activity.defn(name="acquire_sandbox")
    async def acquire_sandbox(self, input: AcquireSandboxInput) -> SandboxLease:
        info = activity.info()
        await run_phase(
            self._services.db,
            input.run_id,
            "sandbox",
            max_iterations=self._services.settings.qai_max_iterations,
            key=f"sandbox:{info.activity_id}",
        )
        try:
            sandbox, fresh = await self.obtain(
                input.project_id, input.sandbox_id, {"run_id": str(input.run_id)}
            )
            return await self.lease(input.project_id, sandbox, fresh=fresh)
        except SandboxError as error:
            raise sandbox_failure(error, "starting the sandbox") from error

    async def _created_earlier(self, request: str) -> Sandbox | None:
        """The sandbox an earlier attempt of this very activity created, if it is still up.

        An attempt can die after `create` succeeded but before it reported; without this the
        retry would start a second sandbox and leave the first running until its timeout.
        """
        if activity.info().attempt == 1:
            return None
        backend = self._services.sandboxes
        timeout = self._services.settings.qai_sandbox_timeout
        for sandbox_id in await backend.find({REQUEST_KEY: request}):
            try:
                sandbox = await backend.connect(sandbox_id, timeout=timeout)
            except SandboxNotFoundError:
                continue
            activity.logger.info("reusing the sandbox an earlier attempt created")
            return sandbox
        return None

    @activity.defn(name="hydrate_sandbox")
    async def hydrate_sandbox(self, input: HydrateSandboxInput) -> HydrateResult:
        """Write the latest fragment's files into a new sandbox (runs from before snapshots)."""
        async with self._services.db.session() as session:
            context = await load_project_conversation_context(session, input.project_id)
        fragment = context.latest_fragment
        if fragment is None or not fragment.files:
            return HydrateResult(files_written=0)
        entries = [WriteEntry(path=path, data=content) for path, content in fragment.files.items()]
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            await sandbox.files.write_files(entries)
        except SandboxError as error:
            raise sandbox_failure(error, "restoring the project's files") from error
        return HydrateResult(files_written=len(entries))

    @activity.defn(name="restore_workspace")
    async def restore_workspace(self, input: RestoreWorkspaceInput) -> RestoredWorkspace:
        """Give a new sandbox the project's workspace back: changes, deletions, dependencies.

        Restoring is idempotent (the same writes, removals and install), so a retry is safe.
        """
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            return await self.restore_into(input.project_id, sandbox, up_to_run=input.run_id)
        except SandboxError as error:
            raise sandbox_failure(error, "restoring the project's files") from error

    async def restore_into(
        self, project_id: uuid.UUID, sandbox: Sandbox, *, up_to_run: uuid.UUID | None
    ) -> RestoredWorkspace:
        """Write the project's latest snapshot (up to `up_to_run`'s) into `sandbox`."""
        async with self._services.db.session() as session:
            snapshot = await snapshots.latest(session, project_id, up_to_run=up_to_run)
            if snapshot is None:  # a project from before snapshots: its fragment's files
                context = await load_project_conversation_context(session, project_id)
                fragment = context.latest_fragment
                files = fragment.files if fragment else {}
                snapshot = WorkspaceSnapshot(
                    files={path: content.encode() for path, content in files.items()}
                )
        problem = None
        async with heartbeating():
            try:
                installed = await sandbox.restore(snapshot)
            except CommandFailedError as failed:
                installed = failed.result
                problem = (
                    f"`{INSTALL_COMMAND}` failed with exit code {failed.exit_code} while "
                    f"restoring the workspace:\n{bound(failed.stderr or failed.stdout, 2000)}"
                )
        return RestoredWorkspace(
            files=len(snapshot.files),
            deleted=len(snapshot.deleted),
            installed=installed is not None,
            problem=problem,
        )

    @activity.defn(name="extend_sandbox")
    async def extend_sandbox(self, input: ExtendSandboxInput) -> None:
        """Keep the preview alive for a full timeout after a run hands it to the user."""
        timeout = input.timeout_seconds or self._services.settings.qai_sandbox_timeout
        if input.run_id is not None:
            await run_phase(
                self._services.db,
                input.run_id,
                "verifying",
                max_iterations=self._services.settings.qai_max_iterations,
                key=f"verifying:{activity.info().activity_id}",
            )
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            await sandbox.set_timeout(timeout)
        except SandboxError as error:
            raise sandbox_failure(error, "extending the sandbox's lifetime") from error
