"""Taking a version's screenshot from a workflow: best effort, so a run or a restore never
fails for it (deterministic; the activity does the work)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.browser import BrowserActivities
    from contract import ScreenshotInput, ScreenshotResult
    from workflows.policies import failure_text, on_host

SCREENSHOT_PATCH = "version-screenshots"
"""A run's final draft is photographed when its browser check ran, and saved with it."""
RESTORE_SCREENSHOT_PATCH = "restore-screenshot"
"""A restored version is photographed too."""


async def take_screenshot(request: ScreenshotInput, host_queue: str | None) -> uuid.UUID | None:
    """The screenshot's id, or None when it could not be taken."""
    try:
        shot: ScreenshotResult = await workflow.execute_activity_method(
            BrowserActivities.take_screenshot,
            request,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=2),
            summary="screenshot",
            **on_host(host_queue),
        )
    except ActivityError as error:
        workflow.logger.warning("no screenshot: %s", failure_text(error))
        return None
    if shot.screenshot_id is None:
        workflow.logger.info("no screenshot: %s", shot.reason)
    return shot.screenshot_id
