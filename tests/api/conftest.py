"""API fixtures: the real API server (uvicorn) in front of the real worker, PostgreSQL,
Temporal's time-skipping server, the scripted model over HTTP and real sandboxes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.server import running_api
from tests.workflows.conftest import (  # noqa: F401  (fixtures the API tests share)
    Harness,
    agent_harness,
    template_ready,
    workflow_env,
)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]


@dataclass
class Stack:
    http: httpx.AsyncClient
    harness: Harness
    llm: Any
    url: str


async def read_events(
    http: httpx.AsyncClient,
    project_id: str,
    until: Callable[[list[Event]], bool],
    *,
    last_event_id: int | None = None,
    comments: list[str] | None = None,
) -> list[Event]:
    """The stream's events until `until(events)` holds (or a comment arrives, with `comments`)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    got: list[Event] = []
    url = f"/api/projects/{project_id}/events"
    async with http.stream("GET", url, headers=headers, timeout=None) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                if comments is not None:
                    comments.append(line)
                    return got
            elif line == "":
                if fields:
                    data = json.loads(fields["data"])
                    got.append(Event(int(fields["id"]), fields["event"], data))
                    fields = {}
                    if until(got):
                        return got
            else:
                name, _, value = line.partition(": ")
                fields[name] = value
    raise AssertionError(f"the stream ended after {len(got)} events")


def run_done(message_id: str) -> Callable[[list[Event]], bool]:
    def check(events: list[Event]) -> bool:
        last = events[-1]
        return (
            last.kind == "run"
            and last.data["phase"] == "done"
            and last.data["message_id"] == message_id
        )

    return check


@pytest.fixture
def api_stack(agent_harness, workflow_env: WorkflowEnvironment, database_url: str):  # noqa: F811
    """A factory: `async with api_stack(script, **settings) as stack:`."""

    @asynccontextmanager
    async def start(script: dict[str, Any], **overrides: Any) -> AsyncIterator[Stack]:
        async with agent_harness(script, **overrides) as (harness, llm):
            settings = harness.settings.model_copy(
                update={"qai_task_queue": harness.task_queue, "qai_api_port": 0}
            )
            async with (
                running_api(settings, database_url, workflow_env.client) as url,
                httpx.AsyncClient(base_url=url, timeout=60) as http,
            ):
                try:
                    yield Stack(http, harness, llm, url)
                finally:  # runs over HTTP never pass through the harness's own bookkeeping
                    await harness.services.sandboxes.kill_owned()

    return start
