"""Making an earlier version current: its workspace is written into a fresh sandbox, and a new
ASSISTANT RESULT with its files becomes the project's latest fragment and snapshot."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import sandbox_failure
from activities.heartbeat import heartbeating
from activities.persistence import emit_message
from activities.services import Services
from contract import RestoredVersion, RestoreVersionInput, StoreErrorType
from sandboxes.base import CommandFailedError, SandboxError, SandboxNotFoundError
from storage import versions


class VersionActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="restore_version")
    async def restore_version(self, input: RestoreVersionInput) -> RestoredVersion:
        """Idempotent: the same writes into the same sandbox, and the message saved once."""
        async with self._services.db.session() as session:
            source = await versions.get_fragment(session, input.fragment_id)
            if source is None:
                raise ApplicationError(
                    f"fragment {input.fragment_id} no longer exists",
                    type=StoreErrorType.UNKNOWN_FRAGMENT,
                    non_retryable=True,
                )
            workspace = await versions.fragment_workspace(session, source)
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            async with heartbeating():
                await sandbox.restore(workspace)
        except CommandFailedError as failed:  # npm install: the files are back, keep going
            activity.logger.warning("install after restoring a version failed: %s", failed)
        except SandboxError as error:
            raise sandbox_failure(error, "restoring the version's files") from error
        when = source.created_at.strftime("%Y-%m-%d %H:%M UTC")
        content = f"Restored version “{source.title}” from {when}."
        async with self._services.db.session() as session:
            message = await versions.save_restored_version(
                session,
                project_id=input.project_id,
                message_id=input.message_id,
                source=source,
                workspace=workspace,
                sandbox_url=input.sandbox_url,
                content=content,
            )
        await emit_message(self._services, message)
        if input.previous_sandbox_id and input.previous_sandbox_id != input.sandbox_id:
            try:
                old = await self._services.sandboxes.connect(input.previous_sandbox_id)
                await old.kill()
            except SandboxNotFoundError:
                pass
            except SandboxError as error:  # it expires on its own
                activity.logger.warning("previous sandbox not stopped: %s", error)
        files = len(message.fragment.files) if message.fragment else 0
        return RestoredVersion(message_id=message.id, title=source.title, files=files)
