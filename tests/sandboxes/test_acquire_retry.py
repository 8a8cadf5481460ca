"""`acquire_sandbox` is idempotent: a retry finds the sandbox its earlier attempt created.

An attempt can die after the backend created the sandbox but before Temporal heard back; the
retry must hand out that sandbox, not start a second one and leave the first running.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from openai import AsyncOpenAI
from temporalio.testing import ActivityEnvironment

from activities.sandbox import SandboxActivities
from activities.sandbox_service import SandboxService
from activities.services import Services
from contract import AcquireSandboxInput, SandboxLease
from runtime.settings import Settings
from sandboxes.local.backend import LocalBackend
from sandboxes.local.templates import LocalTemplate
from storage.db import Database


@pytest.fixture
async def activities(
    make_settings: Callable[..., Settings], tiny_template: LocalTemplate, db: Database
) -> AsyncIterator[tuple[SandboxActivities, LocalBackend]]:
    settings = make_settings()
    # The tiny template stands in for the default one, which `acquire_sandbox` asks for.
    backend = LocalBackend(settings, templates={"nextjs": tiny_template})
    llm = AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")  # never called here
    services = Services(settings=settings, db=db, sandboxes=backend, llm=llm)
    before = set(backend.list_ids())
    try:
        yield SandboxActivities(services, SandboxService(services, "test-host-queue")), backend
    finally:
        await llm.close()
        for sandbox_id in set(backend.list_ids()) - before:
            await backend.kill(sandbox_id)


async def acquire(
    activities: SandboxActivities, input: AcquireSandboxInput, *, activity_id: str, attempt: int
) -> SandboxLease:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, workflow_id=f"agent-run-{input.run_id}", activity_id=activity_id, attempt=attempt
    )
    return await env.run(activities.acquire_sandbox, input)


async def test_a_retry_reuses_the_sandbox_its_lost_attempt_created(activities) -> None:
    acts, backend = activities
    input = AcquireSandboxInput(project_id=uuid.uuid4(), run_id=uuid.uuid4())
    before = set(backend.list_ids())

    lost = await acquire(acts, input, activity_id="1", attempt=1)  # its result never arrived
    retried = await acquire(acts, input, activity_id="1", attempt=2)

    assert retried.sandbox_id == lost.sandbox_id
    assert retried.fresh  # the caller still has to hydrate it: it never heard of it
    assert set(backend.list_ids()) - before == {lost.sandbox_id}


async def test_a_retry_creates_anew_when_the_earlier_sandbox_is_gone(activities) -> None:
    acts, backend = activities
    input = AcquireSandboxInput(project_id=uuid.uuid4(), run_id=uuid.uuid4())

    lost = await acquire(acts, input, activity_id="1", attempt=1)
    await backend.kill(lost.sandbox_id)
    retried = await acquire(acts, input, activity_id="1", attempt=2)

    assert retried.sandbox_id != lost.sandbox_id
    assert await (await backend.connect(retried.sandbox_id)).is_running()


async def test_another_activity_never_takes_a_sandbox_it_did_not_create(activities) -> None:
    acts, backend = activities
    input = AcquireSandboxInput(project_id=uuid.uuid4(), run_id=uuid.uuid4())

    first = await acquire(acts, input, activity_id="1", attempt=1)
    # A later acquire in the same run (its sandbox expired meanwhile), itself on a retry.
    later = await acquire(acts, input, activity_id="7", attempt=2)

    assert later.sandbox_id != first.sandbox_id
    assert sorted(await backend.find({"run_id": str(input.run_id)})) == sorted(
        [first.sandbox_id, later.sandbox_id]
    )
