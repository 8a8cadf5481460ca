"""A finished app is never lost: faults injected into the model, the sandboxes and the runs.

Real parts throughout: the time-skipping Temporal server, the scripted model over HTTP, real
bubblewrap sandboxes running the Next.js dev server, real PostgreSQL. Sandboxes are killed with
SIGKILL, as a crash or the OOM killer would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from contract import EnqueueMessage, agent_run_workflow_id
from runtime.temporal import connect_temporal
from sandboxes.local.layout import Layout, read_state, sandboxes_root
from scripted_llm import scripted_llm_server
from storage import queries
from storage.db import Database
from storage.models import Message, MessageRole, MessageType
from storage.transcript import TranscriptEntry
from submission import enqueue, wait_for_reply
from tests.workflows.conftest import Harness, preview_text, running_worker
from tests.workflows.test_code_agent import (
    entries,
    page,
    replies,
    summary_turn,
    terminal_turn,
    write_turn,
)

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


async def live_sandboxes(harness: Harness, project_id: uuid.UUID) -> list[str]:
    return await harness.services.sandboxes.find({"project_id": str(project_id)})


def sigkill(harness: Harness, sandbox_id: str) -> None:
    """Kill a sandbox's supervisor with SIGKILL: bubblewrap and everything inside die with it."""
    layout = Layout(sandboxes_root(harness.settings.data_dir) / sandbox_id)
    os.kill(read_state(layout.state)["supervisor"]["pid"], signal.SIGKILL)


async def wait_for_turn(harness: Harness, run_id: uuid.UUID, iteration: int) -> None:
    async with asyncio.timeout(120):
        while not any(
            e.role == "assistant" and e.iteration == iteration
            for e in await entries(harness, run_id)
        ):
            await asyncio.sleep(0.05)


async def reply_within(harness: Harness, message_id: uuid.UUID, seconds: float = 240) -> Message:
    async with asyncio.timeout(seconds):
        return await wait_for_reply(harness.client, harness.db, harness._settings(), message_id)


async def tool_results(harness: Harness, run_id: uuid.UUID) -> list[TranscriptEntry]:
    return [e for e in await entries(harness, run_id) if e.role == "tool"]


# --------------------------------------------------------------- 1. nothing optional loses it


async def test_a_title_model_that_never_answers_still_ends_in_a_result(agent_harness) -> None:
    marker = f"Slow title {uuid.uuid4().hex[:6]}"
    script = {
        "default": {
            "title": "Never Seen",
            "title_faults": [{"delay": 75}, {"delay": 75}, {"delay": 75}],
            "turns": [write_turn("app/page.tsx", page(marker)), summary_turn("A page.")],
        }
    }
    async with agent_harness(script, qai_title_timeout=1) as (harness, _llm):
        project_id, message_id = await harness.new_project("Show a slow title page")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.title == "Show A Slow Title Page"  # the prompt's words
        [reply] = await replies(harness, project_id)
        assert reply.fragment is not None and reply.fragment.title == "Show A Slow Title Page"
        await preview_text(reply.fragment.sandbox_url, marker)


async def test_a_run_that_fails_for_any_reason_still_gets_an_error_reply(
    temporal_dev_server: str, database_url: str, clean_db: Database, template_ready: Path
) -> None:
    """Terminating the agent run is the bluntest failure; the project answers the message.

    On the dev server: the time-skipping one does not tell a parent its child was terminated.
    """
    script = {"default": {"turns": [terminal_turn("sleep 60"), summary_turn("never reached")]}}
    client = await connect_temporal(temporal_dev_server)
    async with (
        scripted_llm_server(script) as llm,
        running_worker(SimpleNamespace(client=client), database_url, llm.base_url) as harness,
    ):
        project_id, message_id = await harness.new_project("Build something slow")
        await harness.accept(project_id, message_id)
        await wait_for_turn(harness, message_id, 1)
        harness.sandbox_ids.update(await live_sandboxes(harness, project_id))
        run = harness.client.get_workflow_handle(agent_run_workflow_id(message_id))
        await run.terminate("an operator stopped it")

        reply = await reply_within(harness, message_id)
        await harness.record_histories(project_id, message_id)
        assert reply.type == MessageType.ERROR
        assert "failure inside the service" in reply.content
        assert reply.reply_to_id == message_id


async def test_a_message_whose_client_died_after_submitting_is_answered(agent_harness) -> None:
    marker = f"Orphan {uuid.uuid4().hex[:6]}"
    script = {"default": {"turns": [write_turn("app/page.tsx", page(marker)), summary_turn("Ok")]}}
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = uuid.uuid4(), uuid.uuid4()
        # All a client does before it could die: one signal-with-start. No row is written yet.
        message = EnqueueMessage(
            message_id=message_id, prompt="Build the orphan page", new_project_name="orphan"
        )
        await enqueue(harness.client, harness._settings(), project_id, message)
        await enqueue(harness.client, harness._settings(), project_id, message)  # resubmitted

        reply = await reply_within(harness, message_id)
        assert reply.type == MessageType.RESULT, reply.content
        async with harness.db.session() as session:
            messages = await queries.get_messages(session, project_id)
            project = await queries.get_project(session, project_id)
        assert project is not None and project.name == "orphan"
        assert [(m.id, m.role) for m in messages] == [
            (message_id, MessageRole.USER),
            (reply.id, MessageRole.ASSISTANT),
        ]
        assert messages[0].content == "Build the orphan page"
        harness.sandbox_ids.update(await live_sandboxes(harness, project_id))


# --------------------------------------------------- 2. the workspace comes back exactly


async def test_a_follow_up_on_a_new_sandbox_gets_the_workspace_back_exactly(agent_harness) -> None:
    marker = f"Restored {uuid.uuid4().hex[:6]}"
    app_page = (
        'import { x } from "@/lib/x";\n\n'
        f"export default function Page() {{ return <h1>{marker} {{x}}</h1>; }}\n"
    )
    changes = (
        "mkdir -p lib && echo 'export const x = \"from-echo\";' > lib/x.ts"
        " && sed -i '1i // edited by sed' lib/utils.ts"
        " && rm components/ui/badge.tsx"
        " && npm install is-number@7.0.0 --no-audit --no-fund"
    )
    check = (
        "cat lib/x.ts && head -1 lib/utils.ts && test ! -e components/ui/badge.tsx"
        " && echo badge-gone && node -e \"console.log('is-number', require('is-number')(5))\""
    )
    script = {
        "conversations": [
            {
                "match": "<user_request>\nCheck",
                "turns": [terminal_turn(check), summary_turn("Checked.")],
            },
        ],
        "default": {
            "turns": [
                write_turn("app/page.tsx", app_page),
                terminal_turn(changes),
                summary_turn("Built it with commands."),
            ]
        },
    }
    async with agent_harness(script, qai_sandbox_network="registry") as (harness, _llm):
        project_id, first = await harness.new_project("Build with commands")
        outcome = await harness.submit(project_id, first)
        assert outcome.status.value == "RESULT", outcome.content
        [old_sandbox] = await live_sandboxes(harness, project_id)
        [reply] = await replies(harness, project_id)
        assert reply.fragment is not None
        files = reply.fragment.files
        assert {"app/page.tsx", "lib/x.ts", "lib/utils.ts", "package.json"} <= set(files)
        assert "package-lock.json" in files and "components/ui/badge.tsx" not in files
        assert not any("node_modules" in path or ".next" in path for path in files)

        sigkill(harness, old_sandbox)
        second = await harness.add_message(project_id, "Check the workspace")
        outcome = await harness.submit(project_id, second)
        assert outcome.status.value == "RESULT", outcome.content

        [result] = await tool_results(harness, second)
        terminal = json.loads(result.message["content"])
        assert terminal["exit_code"] == 0, terminal
        assert terminal["stdout"].split("\n")[:4] == [
            'export const x = "from-echo";',
            "// edited by sed",
            "badge-gone",
            "is-number true",
        ]
        [new_sandbox] = await live_sandboxes(harness, project_id)
        assert new_sandbox != old_sandbox
        assert outcome.sandbox_url is not None
        await preview_text(outcome.sandbox_url, "from-echo")


# ------------------------------------------------------------ 3. a dead sandbox is replaced


async def test_a_sandbox_killed_mid_run_is_replaced_and_the_run_goes_on(agent_harness) -> None:
    marker = f"Survivor {uuid.uuid4().hex[:6]}"
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", page(marker)),
                terminal_turn("sleep 3 && grep -c Survivor app/page.tsx"),
                summary_turn("Survived the sandbox."),
            ]
        }
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = await harness.new_project("Build a survivor page")
        await harness.accept(project_id, message_id)
        await wait_for_turn(harness, message_id, 2)
        [doomed] = await live_sandboxes(harness, project_id)
        sigkill(harness, doomed)

        reply = await reply_within(harness, message_id)
        harness.sandbox_ids.update(await live_sandboxes(harness, project_id))
        await harness.record_histories(project_id, message_id)
        assert reply.type == MessageType.RESULT, reply.content
        assert reply.content == "Survived the sandbox."
        [survivor] = await live_sandboxes(harness, project_id)
        assert survivor != doomed

        write, grep = await tool_results(harness, message_id)
        assert "restarted" not in write.message["content"]
        note, _, output = grep.message["content"].partition("\n\n")
        assert "the sandbox stopped and this environment was restarted" in note
        assert json.loads(output)["stdout"].strip() == "1"  # the page came back before it ran
        assert reply.fragment is not None
        await preview_text(reply.fragment.sandbox_url, marker)


async def test_a_run_gives_up_after_its_sandbox_replacements(agent_harness) -> None:
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", page("Doomed")),
                terminal_turn("sleep 5"),
                summary_turn("never"),
            ]
        }
    }
    async with agent_harness(script, qai_sandbox_replacements=0) as (harness, _llm):
        project_id, message_id = await harness.new_project("Build a doomed page")
        await harness.accept(project_id, message_id)
        await wait_for_turn(harness, message_id, 2)
        [doomed] = await live_sandboxes(harness, project_id)
        sigkill(harness, doomed)

        reply = await reply_within(harness, message_id)
        assert reply.type == MessageType.ERROR
        assert reply.content.startswith("The sandbox stopped 1 times during this run")
        assert "sbx-" not in reply.content and "/" not in reply.content


# ------------------------------------------------------- 5. every tool call gets its own id


async def test_repeated_and_empty_tool_call_ids_each_run_under_their_own_id(
    agent_harness,
) -> None:
    def write(path: str, call_id: str) -> dict[str, Any]:
        return {
            "id": call_id,
            "name": "createOrUpdateFiles",
            "arguments": {"files": [{"path": path, "content": f"// {path}\n"}]},
        }

    script = {
        "default": {
            "turns": [
                {"tool_calls": [write("lib/a.ts", "dup"), write("lib/b.ts", "dup")]},
                {"tool_calls": [write("lib/c.ts", ""), write("lib/d.ts", "dup")]},
                summary_turn("Four files."),
            ]
        }
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = await harness.new_project("Write four files")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        [reply] = await replies(harness, project_id)
        assert reply.fragment is not None
        assert {"lib/a.ts", "lib/b.ts", "lib/c.ts", "lib/d.ts"} <= set(reply.fragment.files)

        run = await entries(harness, message_id)
        asked = [
            c["id"] for e in run if e.role == "assistant" for c in e.message.get("tool_calls") or []
        ]
        answered = [e.tool_call_id for e in run if e.role == "tool"]
        assert len(set(asked)) == 4 and "" not in asked
        assert answered == asked
        async with harness.db.session() as session:
            count = await session.execute(
                sa.select(sa.func.count())
                .select_from(TranscriptEntry)
                .where(TranscriptEntry.run_id == message_id, TranscriptEntry.role == "tool")
            )
        assert count.scalar_one() == 4
