"""The starter CLI as a user runs it: a real subprocess, real PostgreSQL, the Temporal dev server
and a worker running the real workflows with the scripted model and a local sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.client import Client

from activities.services import open_services
from contract import project_workflow_id
from gateway.server import running_gateway
from runtime.processes import free_port
from runtime.temporal import connect_temporal
from sandboxes.base import SandboxBackend
from scripted_llm import scripted_llm_server
from storage.db import Database
from storage.models import Message, Project
from tests.workflows.conftest import ROOT, preview_text, settings_for
from worker import build_workers
from workflows.project import ProjectWorkflow

Run = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]


def _env(database_url: str, temporal: str, task_queue: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "QAI_", "TEMPORAL_", "DATABASE_URL"))
    }
    env.update(
        DATABASE_URL=database_url,
        TEMPORAL_ADDRESS=temporal,
        QAI_TASK_QUEUE=task_queue,
        QAI_DATA_DIR=str(ROOT / ".qai"),
    )
    return env


def _runner(env: dict[str, str]) -> Run:
    """Run the CLI in a thread, so the in-process worker keeps serving it meanwhile."""

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "starter.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


async def _counts(db: Database) -> tuple[int, int]:
    async with db.session() as session:
        projects = (await session.execute(sa.select(sa.func.count()).select_from(Project))).scalar()
        messages = (await session.execute(sa.select(sa.func.count()).select_from(Message))).scalar()
    return int(projects or 0), int(messages or 0)


@pytest.fixture
def offline_starter(database_url: str, clean_db: Database) -> Run:
    """A starter whose Temporal address has nothing listening."""
    return _runner(_env(database_url, f"127.0.0.1:{free_port()}", "unused"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("new", "   "), "the prompt is empty"),
        (("new", "x" * 10_001), "the prompt is 10,001 characters long; the limit is 10,000"),
        (("send", "not-a-uuid", "hi"), "'not-a-uuid' is not a project id"),
        (("send", str(uuid.UUID(int=7)), "hi"), f"project {uuid.UUID(int=7)} does not exist"),
        (("show", str(uuid.UUID(int=8))), f"project {uuid.UUID(int=8)} does not exist"),
    ],
    ids=["empty", "too-long", "bad-id", "unknown-project", "show-unknown"],
)
async def test_bad_input_is_refused_and_writes_nothing(
    offline_starter: Run, clean_db: Database, args: tuple[str, ...], message: str
) -> None:
    result = await offline_starter(*args)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"qai: {message}")
    assert await _counts(clean_db) == (0, 0)


async def test_unreachable_temporal_is_reported_before_anything_is_written(
    offline_starter: Run, clean_db: Database
) -> None:
    result = await offline_starter("new", "A todo app")
    assert result.returncode == 1
    assert "cannot connect to Temporal" in result.stderr and "Traceback" not in result.stderr
    assert await _counts(clean_db) == (0, 0)


def test_an_invalid_setting_is_one_line() -> None:
    env = dict(os.environ, QAI_MAX_ITERATIONS="many")
    result = subprocess.run(
        [sys.executable, "starter.py", "list"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "qai: invalid setting QAI_MAX_ITERATIONS: Input should be a valid integer, unable to "
        "parse string as an integer (got 'many')"
    ]


SCRIPT = {
    "conversations": [
        {"match": "impossible", "turns": [{"content": "never", "faults": [{"status": 401}]}]}
    ],
    "default": {
        "title": "Counter App",
        "turns": [
            {
                "tool_calls": [
                    {
                        "name": "createOrUpdateFiles",
                        "arguments": {
                            "files": [
                                {
                                    "path": "app/page.tsx",
                                    "content": "export default function Page() "
                                    "{ return <h1>Counter from the CLI</h1>; }\n",
                                }
                            ]
                        },
                    }
                ]
            },
            {"content": "<task_summary>A counter page.</task_summary>"},
        ],
    },
}


@pytest.fixture
async def live_starter(
    temporal_dev_server: str, database_url: str, clean_db: Database, template_ready: Path
) -> AsyncIterator[Run]:
    task_queue = f"starter-{uuid.uuid4().hex[:8]}"
    async with scripted_llm_server(SCRIPT) as llm:
        settings = settings_for(
            llm.base_url, temporal_address=temporal_dev_server, qai_task_queue=task_queue
        )
        client = await connect_temporal(temporal_dev_server)
        async with (
            open_services(settings, database_url) as services,
            build_workers(client, services),
            running_gateway(settings, services.db, client),
        ):
            yield _runner(_env(database_url, temporal_dev_server, task_queue))
            await _kill_project_sandboxes(client, clean_db, services.sandboxes)


async def _kill_project_sandboxes(client: Client, db: Database, backend: SandboxBackend) -> None:
    """The runs' sandboxes outlive the test otherwise (until their timeout)."""
    async with db.session() as session:
        project_ids = (await session.execute(sa.select(Project.id))).scalars().all()
    for project_id in project_ids:
        handle = client.get_workflow_handle(project_workflow_id(project_id))
        sandbox_id = (await handle.query(ProjectWorkflow.status)).sandbox_id
        if sandbox_id:
            await (await backend.connect(sandbox_id)).kill()


async def test_new_show_list_and_follow_up(live_starter: Run) -> None:
    created = await live_starter("new", "A counter", "--json")
    assert created.returncode == 0, created.stderr
    result = json.loads(created.stdout)
    assert set(result) == {
        "project_id",
        "message_id",
        "workflow_id",
        "status",
        "content",
        "fragment",
    }
    assert result["status"] == "RESULT"
    assert result["content"] == "A counter page."
    assert result["workflow_id"] == f"agent-run-{result['message_id']}"
    assert result["fragment"]["title"] == "Counter App"
    assert set(result["fragment"]["files"]) == {"app/page.tsx"}
    await preview_text(result["fragment"]["sandbox_url"], "Counter from the CLI")

    failed = await live_starter("send", result["project_id"], "Something impossible", "--json")
    assert failed.returncode == 1
    error = json.loads(failed.stdout)
    assert error["status"] == "ERROR" and error["fragment"] is None
    assert "API key" in error["content"]

    shown = json.loads((await live_starter("show", result["project_id"], "--json")).stdout)
    assert [(m["role"], m["type"]) for m in shown["messages"]] == [
        ("USER", "RESULT"),
        ("ASSISTANT", "RESULT"),
        ("USER", "RESULT"),
        ("ASSISTANT", "ERROR"),
    ]
    assert shown["messages"][1]["fragment"]["sandbox_url"] == result["fragment"]["sandbox_url"]

    listed = json.loads((await live_starter("list", "--json")).stdout)
    assert [(p["project_id"], p["messages"]) for p in listed] == [(result["project_id"], 4)]

    human = await live_starter("show", result["project_id"])
    assert "Counter App" in human.stdout and "[ERROR]" in human.stdout


async def test_no_wait_returns_the_ids_at_once(live_starter: Run, clean_db: Database) -> None:
    started = await live_starter("new", "A counter", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    ids = json.loads(started.stdout)
    assert set(ids) == {"project_id", "message_id", "workflow_id"}
    # The run goes on in the worker; `send` to the same project queues behind it.
    follow = await live_starter("send", ids["project_id"], "And again", "--json")
    assert json.loads(follow.stdout)["status"] == "RESULT"
    assert await _counts(clean_db) == (1, 4)


async def test_an_unmigrated_database_is_one_clear_line(database_url: str) -> None:
    import asyncpg

    from tests.conftest import _plain, _with_database

    name = f"qai_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_plain(database_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        env = _env(_with_database(_plain(database_url), name), "127.0.0.1:1", "unused")
        for args in (("list",), ("show", str(uuid.uuid4()))):
            result = await _runner(env)(*args)
            assert result.returncode == 1, result.stderr
            assert result.stderr.strip().splitlines() == [
                "qai: the database has no qai tables yet; run `python -m storage.migrate` "
                "(`python worker.py --dev` does it for you)"
            ]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_with_no_worker_the_cli_says_so_and_no_wait_loses_nothing(
    temporal_dev_server: str, database_url: str, clean_db: Database, template_ready: Path
) -> None:
    task_queue = f"idle-{uuid.uuid4().hex[:8]}"
    env = _env(database_url, temporal_dev_server, task_queue)
    started = await _runner(env)("new", "A counter", "--no-wait", "--json")
    assert started.returncode == 0, started.stderr
    ids = json.loads(started.stdout)
    assert await _counts(clean_db) == (0, 0)  # only the worker writes, once it runs
    # A follow-up to that project is taken at once, though no worker has written its row yet.
    follow = await _runner(env)("send", ids["project_id"], "And a title", "--no-wait", "--json")
    assert follow.returncode == 0, follow.stderr
    follow_id = json.loads(follow.stdout)["message_id"]

    waiting = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        "new",
        "Another counter",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        assert waiting.stderr is not None
        said = await asyncio.wait_for(_line_containing(waiting.stderr, "waiting for a worker"), 60)
        assert said.startswith(f"waiting for a worker on task queue {task_queue} · ")
    finally:
        waiting.send_signal(signal.SIGINT)
        await asyncio.wait_for(waiting.wait(), 30)
    assert waiting.returncode == 130

    # A worker comes: the messages submitted while none ran are recorded and answered.
    async with scripted_llm_server(SCRIPT) as llm:
        settings = settings_for(
            llm.base_url, temporal_address=temporal_dev_server, qai_task_queue=task_queue
        )
        client = await connect_temporal(temporal_dev_server)
        async with (
            open_services(settings, database_url) as services,
            build_workers(client, services),
        ):
            try:
                async with asyncio.timeout(240):
                    while await _counts(clean_db) != (2, 6):
                        await asyncio.sleep(0.5)
                shown = json.loads((await _runner(env)("show", ids["project_id"], "--json")).stdout)
                users = [m["id"] for m in shown["messages"] if m["role"] == "USER"]
                replies = [m["type"] for m in shown["messages"] if m["role"] == "ASSISTANT"]
                assert users == [ids["message_id"], follow_id]  # recorded in arrival order
                assert replies == ["RESULT", "RESULT"]
            finally:
                await _kill_project_sandboxes(client, clean_db, services.sandboxes)


async def _line_containing(stream: asyncio.StreamReader, text: str) -> str:
    async for raw in stream:
        line = raw.decode()
        if text in line:
            return line.strip()
    raise AssertionError(f"the CLI ended without saying {text!r}")
