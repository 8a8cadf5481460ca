"""A project's publishes and unpublishes, run by its workflow in turn with messages and restores.

A publish builds in its own sandbox (never the preview's), so it does not disturb a run; it is
queued behind the work already queued so the version it builds is settled, and an unpublish is
queued behind it so the two never race. History carries ids only: the build's output is blobs.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.publishing import PublishActivities
    from contract import (
        PublishFailureInput,
        PublishInput,
        PublishResult,
        PublishVersion,
        Unpublish,
        UnpublishInput,
    )
    from workflows.policies import RECORD_RETRY, SANDBOX_RETRY, failure_text

PATCH = "publish"
"""New in this workflow's code: every publish path runs behind `workflow.patched(PATCH)`."""


class Publishing:
    """The publishes and unpublishes queued in a project's workflow, by their queue key."""

    def __init__(self, project_id: uuid.UUID) -> None:
        self._project_id = project_id
        self._requests: dict[uuid.UUID, PublishVersion | Unpublish] = {}

    def add(self, key: uuid.UUID, request: PublishVersion | Unpublish) -> None:
        self._requests[key] = request

    def __contains__(self, key: object) -> bool:
        return key in self._requests

    async def run(self, key: uuid.UUID) -> None:
        request = self._requests.pop(key)
        if not workflow.patched(PATCH):  # never reached by a history from before publishing
            return
        if isinstance(request, Unpublish):
            await workflow.execute_activity_method(
                PublishActivities.unpublish,
                UnpublishInput(project_id=self._project_id),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=RECORD_RETRY,
                summary="unpublish",
            )
            return
        try:
            result: PublishResult = await workflow.execute_activity_method(
                PublishActivities.publish_version,
                PublishInput(
                    project_id=self._project_id,
                    publication_id=request.publication_id,
                    fragment_id=request.fragment_id,
                ),
                start_to_close_timeout=timedelta(minutes=20),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary=f"publish version {request.fragment_id}",
            )
        except ActivityError as error:
            workflow.logger.warning("publish %s failed: %s", request.publication_id, error.cause)
            await workflow.execute_activity_method(
                PublishActivities.fail_publication,
                PublishFailureInput(
                    publication_id=request.publication_id,
                    error=f"The publish could not finish: {failure_text(error)}",
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RECORD_RETRY,
                summary="record the failed publish",
            )
            return
        workflow.logger.info("publish %s: live=%s", request.publication_id, result.live)
