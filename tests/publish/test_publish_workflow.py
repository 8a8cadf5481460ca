"""Publishes in the project's workflow, against stand-in activities (seconds, no root): they
wait for the running message, run in arrival order with unpublishes, and a publish whose
activity fails for good is recorded as failed."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from contract import (
    PublishFailureInput,
    PublishInput,
    PublishResult,
    PublishVersion,
    Unpublish,
    Unpublished,
    UnpublishInput,
    project_workflow_id,
)
from tests.workflows.conftest import HISTORIES
from tests.workflows.test_orchestration import (  # noqa: F401  (the module's test server)
    StandIns,
    env,
    project,
    replies,
    summary_turn,
)


class PublishStandIns(StandIns):
    def __init__(self, *args: Any, fail_publish: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_publish = fail_publish

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="publish_version")
        async def publish_version(input: PublishInput) -> PublishResult:
            self.calls.append(("publish_version", input))
            if self.fail_publish:
                raise ApplicationError("The build sandbox could not start.", non_retryable=True)
            return PublishResult(live=True, mode="static", files=3)

        @activity.defn(name="fail_publication")
        async def fail_publication(input: PublishFailureInput) -> None:
            self.calls.append(("fail_publication", input))

        @activity.defn(name="unpublish")
        async def unpublish(input: UnpublishInput) -> Unpublished:
            self.calls.append(("unpublish", input))
            return Unpublished(builds_removed=1)

        return [*super().activities(), publish_version, fail_publication, unpublish]


async def wait_for(stand_ins: StandIns, name: str) -> None:
    async with asyncio.timeout(30):
        while not stand_ins.named(name):
            await asyncio.sleep(0.05)


async def test_publishes_wait_for_the_run_and_keep_their_order(env) -> None:  # noqa: F811
    stand_ins = PublishStandIns([summary_turn("Built.")])
    stand_ins.hold_turns = True
    async with project(env, stand_ins) as (send, project_id):
        await send()
        await asyncio.wait_for(stand_ins.turn_started.wait(), 30)
        handle = env.client.get_workflow_handle(project_workflow_id(project_id))
        publish = PublishVersion(publication_id=uuid.uuid4(), fragment_id=uuid.uuid4())
        await handle.signal("publish", publish)
        await handle.signal("publish", publish)  # the same publish twice: built once
        await handle.signal("unpublish", Unpublish(request_id=uuid.uuid4()))
        await asyncio.sleep(0.5)
        assert not stand_ins.named("publish_version")  # the run is still going
        stand_ins.release.set()
        await replies(stand_ins, 1)
        await wait_for(stand_ins, "unpublish")
        if os.environ.get("QAI_RECORD_HISTORIES"):  # kept for the replay tests
            history = await handle.fetch_history()
            name = "test_publishes_wait_for_the_run_and_keep_their_order-project.json"
            (HISTORIES / name).write_text(history.to_json())
    names = [name for name, _ in stand_ins.calls]
    assert names.index("save_reply") < names.index("publish_version") < names.index("unpublish")
    (built,) = stand_ins.named("publish_version")
    assert built == PublishInput(
        project_id=project_id,
        publication_id=publish.publication_id,
        fragment_id=publish.fragment_id,
    )
    assert stand_ins.named("unpublish") == [UnpublishInput(project_id=project_id)]


async def test_a_publish_that_cannot_finish_is_recorded_as_failed(env) -> None:  # noqa: F811
    stand_ins = PublishStandIns([summary_turn("Built.")], fail_publish=True)
    async with project(env, stand_ins) as (send, project_id):
        await send()
        await replies(stand_ins, 1)
        handle = env.client.get_workflow_handle(project_workflow_id(project_id))
        publish = PublishVersion(publication_id=uuid.uuid4(), fragment_id=uuid.uuid4())
        await handle.signal("publish", publish)
        await wait_for(stand_ins, "fail_publication")
    (failure,) = stand_ins.named("fail_publication")
    assert failure.publication_id == publish.publication_id
    assert failure.error == "The publish could not finish: The build sandbox could not start."
