"""Workflow fixtures: the time-skipping test server, the real local sandbox and template,
the scripted model over real HTTP, and a worker wired exactly as `worker.py` wires it."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.services import Services, open_services
from contract import (
    EnqueueMessage,
    MessageOutcome,
    ProjectStatus,
    agent_run_workflow_id,
    project_workflow_id,
)
from gateway.server import running_gateway
from runtime.preview_urls import loopback_target
from runtime.processes import free_port
from runtime.settings import Settings
from runtime.temporal import ensure_search_attributes
from scripted_llm import scripted_llm_server
from storage.db import Database
from submission import enqueue, outcome_of, wait_for_reply
from worker import build_workers
from workflows.project import ProjectWorkflow

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = Path(sys.prefix) / "bin" / "temporal-test-server"
HISTORIES = ROOT / "tests" / "replay" / "histories"


def settings_for(llm_base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": "test-key",
        "openai_base_url": llm_base_url,
        "qai_model": "scripted",
        "qai_title_model": "scripted-mini",
        "qai_sandbox_network": "none",
        "qai_sandbox_timeout": 600,
        "qai_data_dir": ROOT / ".qai",
        "qai_max_iterations": 8,
        "qai_sandbox_pool_size": 0,
        # A port of its own: test sessions (and workers within one) never share a gateway.
        "qai_preview_port": free_port(),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def preview_text(url: str, expected: str, wait_seconds: float = 120) -> str:
    """The preview's HTML once it shows `expected` (the dev server compiles on first request).

    A stable URL (`<project>.preview.localhost`) is reached as a browser would: on loopback,
    with the name in `Host`."""
    deadline = time.monotonic() + wait_seconds
    body = ""
    target, host = loopback_target(url)
    headers = {"Host": host} if host else {}
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(target, headers=headers)
                body = response.text
                if response.status_code == 200 and expected in body:
                    return body
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"{url} never showed {expected!r}; last body starts {body[:300]!r}")


@pytest.fixture(scope="session")
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(TEST_SERVER),
    )
    await ensure_search_attributes(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def template_ready() -> Path:
    """The Next.js template, built once and cached under .qai by its inputs."""
    from sandboxes.template import ensure_template

    return ensure_template(settings_for("http://unused/v1"))


@dataclass
class Harness:
    client: Client
    services: Services
    task_queue: str
    sandbox_ids: set[str]
    prompts: dict[uuid.UUID, EnqueueMessage] = field(default_factory=dict)
    """Messages chosen but not yet submitted (the project workflow writes their rows)."""

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def db(self) -> Database:
        return self.services.db

    async def new_project(self, prompt: str) -> tuple[uuid.UUID, uuid.UUID]:
        """Ids for a new project's first message, as a client chooses them (nothing written)."""
        project_id, message_id = uuid.uuid4(), uuid.uuid4()
        self.prompts[message_id] = EnqueueMessage(
            message_id=message_id, prompt=prompt, new_project_name="test"
        )
        return project_id, message_id

    async def add_message(self, project_id: uuid.UUID, prompt: str) -> uuid.UUID:
        message_id = uuid.uuid4()
        # Named like a first message: a follow-up sent at the same moment as the project's first
        # message may be recorded before it, and must not find the project missing.
        self.prompts[message_id] = EnqueueMessage(
            message_id=message_id, prompt=prompt, new_project_name="test"
        )
        return message_id

    async def accept(self, project_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """Submit without waiting, exactly as every client does (signal-with-start)."""
        await enqueue(self.client, self._settings(), project_id, self.prompts[message_id])

    async def submit(self, project_id: uuid.UUID, message_id: uuid.UUID) -> MessageOutcome:
        await self.accept(project_id, message_id)
        async with asyncio.timeout(300):
            reply = await wait_for_reply(self.client, self.db, self._settings(), message_id)
        outcome = outcome_of(reply, message_id)
        status = await self.project_status(project_id)
        if status.sandbox_id:
            self.sandbox_ids.add(status.sandbox_id)
        await self.record_histories(project_id, message_id)
        return outcome

    def _settings(self) -> Settings:
        return self.settings.model_copy(update={"qai_task_queue": self.task_queue})

    async def record_histories(self, project_id: uuid.UUID, message_id: uuid.UUID) -> None:
        """With QAI_RECORD_HISTORIES=1, keep the histories for the replay tests."""
        if not os.environ.get("QAI_RECORD_HISTORIES"):
            return
        test = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0]
        HISTORIES.mkdir(parents=True, exist_ok=True)
        for kind, workflow_id in (
            ("project", project_workflow_id(project_id)),
            ("agent-run", agent_run_workflow_id(message_id)),
        ):
            history = await self.client.get_workflow_handle(workflow_id).fetch_history()
            (HISTORIES / f"{test}-{kind}.json").write_text(history.to_json())

    async def project_sandbox(self, project_id: uuid.UUID) -> str:
        """The project's sandbox once its workflow has it: a reply is saved just before the run
        hands its sandbox back, so right after a reply the workflow may not have it yet."""
        async with asyncio.timeout(60):
            while (sandbox_id := (await self.project_status(project_id)).sandbox_id) is None:
                await asyncio.sleep(0.1)
        return sandbox_id

    async def project_status(self, project_id: uuid.UUID) -> ProjectStatus:
        handle = self.client.get_workflow_handle(project_workflow_id(project_id))
        return await handle.query(ProjectWorkflow.status)


@asynccontextmanager
async def running_worker(
    env: WorkflowEnvironment, database_url: str, llm_base_url: str, **overrides: Any
) -> AsyncIterator[Harness]:
    settings = settings_for(llm_base_url, **overrides)
    task_queue = f"test-{uuid.uuid4().hex[:8]}"
    async with open_services(settings, database_url) as services:
        harness = Harness(env.client, services, task_queue, set())
        try:
            async with (
                build_workers(env.client, services, task_queue=task_queue),
                running_gateway(harness._settings(), services.db, env.client),
            ):
                yield harness
        finally:
            for sandbox_id in harness.sandbox_ids:
                try:
                    sandbox = await services.sandboxes.connect(sandbox_id)
                    await sandbox.kill()
                except Exception as error:  # the test itself may have killed it
                    print(f"sandbox {sandbox_id} cleanup: {error}")


@pytest.fixture
def agent_harness(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database, template_ready: Path
):
    """A factory: `async with agent_harness(script, **settings) as (harness, llm):`."""

    @asynccontextmanager
    async def start(script: dict[str, Any], **overrides: Any) -> AsyncIterator[tuple[Harness, Any]]:
        async with (
            scripted_llm_server(script) as llm,
            running_worker(workflow_env, database_url, llm.base_url, **overrides) as harness,
        ):
            yield harness, llm

    return start
