"""Deleting a project: its sandboxes are stopped, then its rows removed (by cascade)."""

from __future__ import annotations

from temporalio import activity

from activities.errors import sandbox_failure
from activities.services import Services
from contract import DeletedProject, DeleteProjectInput
from sandboxes.base import SandboxError, SandboxNotFoundError
from storage import versions


class DeletionActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="delete_project")
    async def delete_project(self, input: DeleteProjectInput) -> DeletedProject:
        """Idempotent: a retry finds fewer sandboxes and no rows, and finishes the job."""
        backend = self._services.sandboxes
        killed = 0
        try:
            found = await backend.find({"project_id": str(input.project_id)})
            for sandbox_id in {*found, *([input.sandbox_id] if input.sandbox_id else [])}:
                try:
                    sandbox = await backend.connect(sandbox_id)
                except SandboxNotFoundError:
                    continue
                killed += int(await sandbox.kill())
        except SandboxError as error:
            raise sandbox_failure(error, "stopping the project's sandboxes") from error
        async with self._services.db.session() as session:
            deleted = await versions.delete_project(session, input.project_id)
        activity.logger.info("project deleted", extra={"sandboxes": killed})
        return DeletedProject(sandboxes_killed=killed, deleted=deleted)
