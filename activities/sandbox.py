"""Sandbox lifecycle activities of a run: get one (reusing the project's while it lives),
give a new one the workspace back, keep it alive."""

from __future__ import annotations

from temporalio import activity

from activities.errors import sandbox_failure
from activities.events import run_phase
from activities.sandbox_service import SandboxService
from activities.services import Services
from contract import (
    AcquireSandboxInput,
    ExtendSandboxInput,
    RestoredWorkspace,
    RestoreWorkspaceInput,
    SandboxLease,
)
from sandboxes.base import SandboxError


class SandboxActivities:
    def __init__(self, services: Services, sandboxes: SandboxService) -> None:
        self._services = services
        self._sandboxes = sandboxes

    @activity.defn(name="acquire_sandbox")
    async def acquire_sandbox(self, input: AcquireSandboxInput) -> SandboxLease:
        info = activity.info()
        await run_phase(
            self._services.db,
            input.run_id,
            "sandbox",
            max_iterations=input.max_iterations,
            key=f"sandbox:{info.activity_id}",
        )
        try:
            sandbox, fresh = await self._sandboxes.obtain(
                input.project_id, input.sandbox_id, {"run_id": str(input.run_id)}
            )
            return await self._sandboxes.lease(input.project_id, sandbox, fresh=fresh)
        except SandboxError as error:
            raise sandbox_failure(error, "starting the sandbox") from error

    @activity.defn(name="restore_workspace")
    async def restore_workspace(self, input: RestoreWorkspaceInput) -> RestoredWorkspace:
        """Give a new sandbox the project's workspace back: changes, deletions, dependencies.

        Restoring is idempotent (the same writes, removals and install), so a retry is safe.
        """
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            return await self._sandboxes.restore_workspace(
                input.project_id, sandbox, up_to_run=input.run_id
            )
        except SandboxError as error:
            raise sandbox_failure(error, "restoring the project's files") from error

    @activity.defn(name="extend_sandbox")
    async def extend_sandbox(self, input: ExtendSandboxInput) -> None:
        """Keep the preview alive for a full timeout after a run hands it to the user."""
        timeout = input.timeout_seconds or self._services.settings.qai_sandbox_timeout
        if input.run_id is not None:
            await run_phase(
                self._services.db,
                input.run_id,
                "verifying",
                max_iterations=input.max_iterations,
                key=f"verifying:{activity.info().activity_id}",
            )
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            await sandbox.set_timeout(timeout)
        except SandboxError as error:
            raise sandbox_failure(error, "extending the sandbox's lifetime") from error
