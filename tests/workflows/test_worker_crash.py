"""A worker killed mid-run (SIGKILL) and started again finishes the run: exactly one assistant
message, and no model call that completed is paid for again.

Runs on the Temporal dev server with `python worker.py` as a real subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from contract import project_workflow_id
from runtime.processes import free_port
from runtime.temporal import connect_temporal
from sandboxes.factory import sandbox_backend
from scripted_llm import scripted_llm_server
from storage import queries, transcript
from storage.db import Database
from storage.models import MessageRole
from tests.stopping import start_worker, worker_env
from tests.workflows.conftest import preview_text, settings_for
from workflows.project import ProjectWorkflow

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _turns() -> list[dict]:
    page = "export default function Page() { return <h1>Survived</h1>; }\n"
    write = {"path": "app/page.tsx", "content": page}
    return [
        {"tool_calls": [{"name": "createOrUpdateFiles", "arguments": {"files": [write]}}]},
        {"tool_calls": [{"name": "terminal", "arguments": {"command": "sleep 2; echo slept"}}]},
        {"tool_calls": [{"name": "terminal", "arguments": {"command": "ls app"}}], "delay": 1},
        {"content": "<task_summary>Survived a crash.</task_summary>"},
    ]


async def _stored_turn(db: Database, run_id: uuid.UUID, iteration: int) -> bool:
    async with db.session() as session:
        return await transcript.assistant_turn(session, run_id, iteration) is not None


async def _reply(db: Database, message_id: uuid.UUID, seconds: float) -> object:
    async with asyncio.timeout(seconds):
        while True:
            async with db.session() as session:
                reply = await queries.get_reply(session, message_id)
            if reply is not None:
                return reply
            await asyncio.sleep(0.5)


async def test_killed_worker_resumes_without_duplicates(
    temporal_dev_server: str, database_url: str, clean_db: Database, template_ready: Path
) -> None:
    from submission import submit_prompt

    script = {"default": {"title": "Crash Survivor", "turns": _turns()}}
    task_queue = f"crash-{uuid.uuid4().hex[:8]}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"qai-{task_queue}.log"
    async with scripted_llm_server(script) as llm:
        settings = settings_for(
            llm.base_url, temporal_address=temporal_dev_server, qai_task_queue=task_queue
        )
        env = worker_env(
            DATABASE_URL=database_url,
            TEMPORAL_ADDRESS=temporal_dev_server,
            QAI_TASK_QUEUE=task_queue,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test-key",
            QAI_MODEL="scripted",
            QAI_SANDBOX_NETWORK="none",
            QAI_SANDBOX_POOL_SIZE="0",
            QAI_DATA_DIR=str(settings.data_dir),
            QAI_PREVIEW_PORT=str(settings.qai_preview_port),
            QAI_METRICS_PORT=str(free_port()),
            QAI_LOG_FORMAT="json",
        )
        client = await connect_temporal(temporal_dev_server)
        worker = start_worker(env, log)
        try:
            submitted = await submit_prompt(client, clean_db, settings, "Build it")
            project_id, message_id = submitted.project_id, submitted.message_id
            # Kill the worker once the second model reply is stored: the run is then between
            # that paid call and the activity reporting it, or inside the slow tool call.
            async with asyncio.timeout(120):
                while not await _stored_turn(clean_db, message_id, iteration=2):
                    await asyncio.sleep(0.05)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)

            worker = start_worker(env, log)
            reply = await _reply(clean_db, message_id, seconds=180)
            handle = client.get_workflow_handle(project_workflow_id(project_id))
            # The reply is saved just before the run returns to the project workflow, which
            # only then records the sandbox: wait for it rather than race it.
            async with asyncio.timeout(60):
                while (
                    sandbox_id := (await handle.query(ProjectWorkflow.status)).sandbox_id
                ) is None:
                    await asyncio.sleep(0.1)
            # The sandbox outlived the dead worker and still serves the page, through the
            # restarted worker's gateway at the same URL.
            assert reply.fragment is not None, reply.content
            await preview_text(reply.fragment.sandbox_url, "Survived")
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(timeout=30)

        backend = sandbox_backend(settings)
        try:
            assert reply.type.value == "RESULT", (reply.content, log.read_text()[-3000:])
            assert reply.content == "Survived a crash."
            async with clean_db.session() as session:
                messages = await queries.get_messages(session, project_id)
            assert [m.role for m in messages] == [MessageRole.USER, MessageRole.ASSISTANT]
            completed = llm.completed_counts()
            assert completed, "the scripted model saw no calls"
            assert all(count == 1 for count in completed.values()), completed
            assert {turn for (_, turn) in completed if turn is not None} == {0, 1, 2, 3}

            # It is the project's only sandbox.
            assert await backend.find({"project_id": str(project_id)}) == [sandbox_id]
        finally:
            for leftover in await backend.find({"project_id": str(project_id)}):
                await backend.kill(leftover)
