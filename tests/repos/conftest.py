"""Fixtures for the git tests: a git server on loopback and the API in front of PostgreSQL and
Temporal (no worker: these tests build versions in PostgreSQL directly)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.server import running_api
from sandboxes.snapshot import WorkspaceSnapshot
from storage import snapshots
from storage.db import Database
from storage.models import Fragment, Message, MessageRole, MessageType, Project
from tests.api.conftest import agent_harness, api_stack, template_ready  # noqa: F401
from tests.repos.git_server import GitServer, git_server
from tests.workflows.conftest import settings_for, workflow_env  # noqa: F401


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path):
    with git_server(tmp_path / "served", password="s3cret-remote-token") as served:
        yield served


@pytest.fixture
def api(workflow_env, database_url: str, tmp_path: Path):  # noqa: F811
    """A factory: `async with api(server, **settings) as (http, settings):`."""

    @asynccontextmanager
    async def start(
        served: GitServer | None, **overrides: Any
    ) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        allowed = [f"127.0.0.1:{served.port}"] if served else []
        allowed.append(f"127.0.0.1:{closed_port()}")
        settings = settings_for(
            "http://unused/v1",
            qai_api_port=0,
            qai_task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
            qai_git_allowed_hosts=",".join(allowed),
            qai_data_dir=tmp_path / "data",  # the repositories' caches go with the test
            **overrides,
        )
        async with (
            running_api(settings, database_url, workflow_env.client) as url,
            httpx.AsyncClient(base_url=url, timeout=120) as http,
        ):
            yield http, settings

    return start


VersionMaker = Callable[..., Any]


async def add_version(
    db: Database,
    project_id: uuid.UUID,
    workspace: WorkspaceSnapshot,
    *,
    summary: str,
    prompt: str | None,
    title: str = "Version",
) -> Message:
    """A RESULT version as a run (with `prompt`) or a restore (without) leaves it."""
    async with db.session() as session:
        if await session.get(Project, project_id) is None:
            session.add(Project(id=project_id, name="git-test"))
            await session.flush()
        asked = None
        if prompt is not None:
            asked = Message(
                project_id=project_id,
                role=MessageRole.USER,
                type=MessageType.RESULT,
                content=prompt,
                fragment=None,
            )
            session.add(asked)
            await session.flush()
        reply = Message(
            project_id=project_id,
            role=MessageRole.ASSISTANT,
            type=MessageType.RESULT,
            content=summary,
            reply_to_id=asked.id if asked else None,
            fragment=None,
        )
        session.add(reply)
        reply.fragment = Fragment(
            message_id=reply.id,
            sandbox_url="http://example.invalid/",
            title=title,
            files=workspace.source_files(),
            summary=summary,
        )
        await session.flush()
        await snapshots.save(
            session,
            project_id=project_id,
            run_id=asked.id if asked else reply.id,
            snapshot=workspace,
            tool_call_id=None,
        )
        await session.commit()
        return reply
