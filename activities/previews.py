"""Previews between runs: revive a project's sandbox on request, hibernate it when quiet.

Both run on behalf of the project's workflow, so they queue correctly with its runs: a revival
never races a run for the sandbox, and a sandbox is never stopped under a running agent.
"""

from __future__ import annotations

from temporalio import activity

from activities.errors import sandbox_failure
from activities.sandbox_service import SandboxService
from activities.services import Services
from contract import PreviewWatch, SandboxLease, StartPreviewInput, WatchPreviewInput
from runtime import metrics
from sandboxes.base import SandboxError, SandboxNotFoundError
from storage import previews


class PreviewActivities:
    def __init__(self, services: Services, sandboxes: SandboxService) -> None:
        self._services = services
        self._sandboxes = sandboxes

    @activity.defn(name="start_preview")
    async def start_preview(self, input: StartPreviewInput) -> SandboxLease:
        """A running sandbox with the project's latest workspace, recorded as its preview.

        Idempotent: a retry finds the sandbox its lost attempt created, and restoring writes
        the same files again.
        """
        watch = metrics.Stopwatch()
        try:
            sandbox, fresh = await self._sandboxes.obtain(
                input.project_id, input.sandbox_id, {"purpose": "preview"}
            )
            if fresh:
                restored = await self._sandboxes.restore_workspace(
                    input.project_id, sandbox, up_to_run=None
                )
                if restored.problem:
                    activity.logger.warning("preview restored with a problem: %s", restored.problem)
                metrics.SANDBOX_REVIVAL_SECONDS.observe(watch.seconds)
            return await self._sandboxes.lease(input.project_id, sandbox, fresh=fresh)
        except SandboxError as error:
            raise sandbox_failure(error, "starting the preview") from error

    @activity.defn(name="watch_preview")
    async def watch_preview(self, input: WatchPreviewInput) -> PreviewWatch:
        """Stop the sandbox once its preview had no traffic for QAI_PREVIEW_IDLE_SECONDS;
        until then keep it from expiring, and say when to look again."""
        settings = self._services.settings
        idle = settings.qai_preview_idle_seconds
        if idle == 0:
            return PreviewWatch(hibernated=False, check_again_seconds=None)
        async with self._services.db.session() as session:
            row = await previews.get(session, input.project_id)
            quiet = await previews.quiet_seconds(session, input.project_id)
        if row is None or quiet is None or row.sandbox_id != input.sandbox_id:
            # Not (or no longer) the project's preview: its workflow's own bookkeeping differs.
            return PreviewWatch(hibernated=False, check_again_seconds=float(idle))
        backend = self._services.sandboxes
        try:
            sandbox = await backend.connect(input.sandbox_id, timeout=settings.qai_sandbox_timeout)
            if quiet < idle:
                return PreviewWatch(hibernated=False, check_again_seconds=max(idle - quiet, 1.0))
            await sandbox.kill()
            activity.logger.info("preview hibernated after %.0f s without traffic", quiet)
        except SandboxNotFoundError:
            activity.logger.info("the preview's sandbox is gone; it revives on the next visit")
        except SandboxError as error:
            raise sandbox_failure(error, "hibernating the preview") from error
        async with self._services.db.session() as session:
            await previews.mark_hibernated(session, input.project_id, input.sandbox_id)
            await session.commit()
        return PreviewWatch(hibernated=True, check_again_seconds=None)
