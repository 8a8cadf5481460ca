"""The sandbox work that several activities share: getting the project's sandbox (or a new
one), handing it out under the stable preview URL, and giving a new one the workspace back.

Activities call this service; they never call each other's methods.
"""

from __future__ import annotations

import uuid
from functools import cache

from temporalio import activity

from activities.heartbeat import heartbeating
from activities.services import Services
from agent.tools import bound
from contract import RestoredWorkspace, SandboxLease
from runtime import metrics
from runtime.preview_urls import preview_url
from runtime.settings import SandboxBackendName
from sandboxes.base import INSTALL_COMMAND, CommandFailedError, Sandbox, SandboxNotFoundError
from sandboxes.manifest import load_manifest
from sandboxes.snapshot import WorkspaceSnapshot
from storage import previews, snapshots

REQUEST_KEY = "qai_request"
"""Sandbox metadata naming the activity execution that created it, so a retry can find it."""


@cache
def preview_port() -> int:
    """The port the template's dev server listens on, from its manifest."""
    return load_manifest().port


class SandboxService:
    def __init__(self, services: Services, host_queue: str) -> None:
        self._services = services
        self._host_queue = host_queue
        """The task queue only this worker's host polls (local sandboxes live on one host)."""

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
                target=sandbox.preview_url(preview_port()),
            )
            await session.commit()
        # A local sandbox lives on this host alone; an E2B sandbox is reachable from any.
        local = settings.qai_sandbox_backend == SandboxBackendName.LOCAL
        return SandboxLease(
            sandbox_id=sandbox.sandbox_id,
            url=preview_url(settings, project_id),
            fresh=fresh,
            host_id=settings.host_id if local else None,
            host_queue=self._host_queue if local else None,
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
            async with heartbeating(), metrics.timed(metrics.SANDBOX_CREATE_SECONDS):
                sandbox = await backend.create(
                    timeout=timeout,
                    metadata={"project_id": str(project_id), **metadata, REQUEST_KEY: request},
                )
        return sandbox, True

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

    async def restore_workspace(
        self, project_id: uuid.UUID, sandbox: Sandbox, *, up_to_run: uuid.UUID | None
    ) -> RestoredWorkspace:
        """Write the project's workspace (as of `up_to_run`'s snapshot) into `sandbox`."""
        async with self._services.db.session() as session:
            workspace = await snapshots.workspace(session, project_id, up_to_run=up_to_run)
        workspace = workspace or WorkspaceSnapshot(files={})
        problem = None
        async with heartbeating():
            try:
                installed = await sandbox.restore(workspace)
            except CommandFailedError as failed:
                installed = failed.result
                problem = (
                    f"`{INSTALL_COMMAND}` failed with exit code {failed.exit_code} while "
                    f"restoring the workspace:\n{bound(failed.stderr or failed.stdout, 2000)}"
                )
        return RestoredWorkspace(
            files=len(workspace.files),
            deleted=len(workspace.deleted),
            installed=installed is not None,
            problem=problem,
        )
