"""End-to-end runs on the time-skipping server: scripted model over HTTP, real local sandbox,
real Next.js dev server, real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from contract import project_workflow_id
from sandboxes.base import SandboxNotFoundError
from storage import queries
from storage.models import Message, MessageRole, MessageType
from storage.transcript import TranscriptEntry
from tests.workflows.conftest import Harness, preview_text

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

USAGE = {"prompt_tokens": 120, "completion_tokens": 30}


def page(marker: str) -> str:
    return (
        'import { Button } from "@/components/ui/button";\n\n'
        "export default function Page() {\n"
        f'  return <main className="p-8"><h1>{marker}</h1><Button>Go</Button></main>;\n'
        "}\n"
    )


def write_turn(path: str, content: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {
                "name": "createOrUpdateFiles",
                "arguments": {"files": [{"path": path, "content": content}]},
            }
        ],
        "usage": USAGE,
    }


def terminal_turn(command: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "terminal", "arguments": {"command": command}}], "usage": USAGE}


def summary_turn(text: str) -> dict[str, Any]:
    return {"content": f"All done.\n<task_summary>\n{text}\n</task_summary>", "usage": USAGE}


async def replies(harness: Harness, project_id: uuid.UUID) -> list[Message]:
    async with harness.db.session() as session:
        messages = await queries.get_messages(session, project_id)
    return [m for m in messages if m.role == MessageRole.ASSISTANT]


async def entries(harness: Harness, run_id: uuid.UUID) -> list[TranscriptEntry]:
    async with harness.db.session() as session:
        query = (
            sa.select(TranscriptEntry)
            .where(TranscriptEntry.run_id == run_id)
            .order_by(TranscriptEntry.seq)
        )
        return list((await session.execute(query)).scalars())


async def test_new_project_builds_a_live_preview(agent_harness) -> None:
    marker = f"Hello {uuid.uuid4().hex[:8]}"
    script = {
        "default": {
            "title": "Hello Page",
            "turns": [
                write_turn("app/page.tsx", page(marker)),
                terminal_turn("grep -c Hello app/page.tsx"),
                summary_turn("A hello page with a button."),
            ],
        }
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build a hello page")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.content == "A hello page with a button."
        assert outcome.title == "Hello Page"
        [reply] = await replies(harness, project_id)
        assert reply.type == MessageType.RESULT
        assert reply.reply_to_id == message_id
        assert reply.fragment is not None
        assert reply.fragment.files == {"app/page.tsx": page(marker)}
        assert reply.fragment.title == "Hello Page"
        assert reply.prompt_tokens is not None and reply.prompt_tokens >= 3 * USAGE["prompt_tokens"]
        assert reply.completion_tokens is not None
        assert reply.completion_tokens >= 3 * USAGE["completion_tokens"]
        assert reply.iterations == 3

        html = await preview_text(reply.fragment.sandbox_url, marker)
        assert "Go" in html

        run = await entries(harness, message_id)
        assert [e.role for e in run[:2]] == ["system", "user"]
        assert "<user_request>\nBuild a hello page\n</user_request>" in run[1].message["content"]
        tool_results = [e for e in run if e.role == "tool"]
        assert len(tool_results) == 2
        terminal = json.loads(tool_results[1].message["content"])
        assert terminal["exit_code"] == 0 and terminal["stdout"].strip() == "1"
        # Every model call completed exactly once.
        assert all(count == 1 for count in llm.completed_counts().values())

        async with harness.db.session() as session:
            project = await queries.get_project(session, project_id)
        assert project.conversation_summary == (
            "User: Build a hello page\nAssistant: A hello page with a button."
        )


async def test_follow_up_reuses_the_sandbox_and_remembers(agent_harness) -> None:
    script = {
        "conversations": [
            {
                "match": "footer",
                "title": "Hello With Footer",
                "turns": [
                    {
                        "tool_calls": [
                            {"name": "readFiles", "arguments": {"files": ["app/page.tsx"]}}
                        ]
                    },
                    write_turn(
                        "components/footer.tsx",
                        "export function Footer() { return <footer>Bye</footer>; }\n",
                    ),
                    summary_turn("Added a footer component."),
                ],
            }
        ],
        "default": {
            "title": "Hello Page",
            "turns": [write_turn("app/page.tsx", page("First")), summary_turn("First page.")],
        },
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, first = await harness.new_project("Build a hello page")
        one = await harness.submit(project_id, first)
        sandbox_before = await harness.project_sandbox(project_id)
        second = await harness.add_message(project_id, "Now add a footer")
        two = await harness.submit(project_id, second)

        assert one.status.value == two.status.value == "RESULT"
        assert (await harness.project_status(project_id)).sandbox_id == sandbox_before
        assert two.sandbox_url == one.sandbox_url
        latest = (await replies(harness, project_id))[-1]
        assert latest.fragment is not None
        assert set(latest.fragment.files) == {"app/page.tsx", "components/footer.tsx"}

        payload = (await entries(harness, second))[1].message["content"]
        assert "<conversation_summary>\nUser: Build a hello page\nAssistant: First page." in payload
        assert "<user_request>\nNow add a footer\n</user_request>" in payload
        read = next(e for e in await entries(harness, second) if e.role == "tool")
        assert "First" in read.message["content"]

        async with harness.db.session() as session:
            project = await queries.get_project(session, project_id)
        assert project.conversation_summary.splitlines() == [
            "User: Build a hello page",
            "Assistant: First page.",
            "User: Now add a footer",
            "Assistant: Added a footer component.",
        ]


async def test_expired_sandbox_is_replaced_and_hydrated(agent_harness) -> None:
    marker = f"Kept {uuid.uuid4().hex[:6]}"
    script = {
        "conversations": [
            {"match": "again", "turns": [terminal_turn("ls app"), summary_turn("Checked.")]}
        ],
        "default": {"turns": [write_turn("app/page.tsx", page(marker)), summary_turn("Page.")]},
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, first = await harness.new_project("Build a page")
        await harness.submit(project_id, first)
        old_id = (await harness.project_status(project_id)).sandbox_id
        assert old_id is not None
        await (await harness.services.sandboxes.connect(old_id)).kill()
        with pytest.raises(SandboxNotFoundError):
            await harness.services.sandboxes.connect(old_id)

        second = await harness.add_message(project_id, "Look again")
        outcome = await harness.submit(project_id, second)

        assert outcome.status.value == "RESULT", outcome.content
        # The reply is saved just before the run hands its new sandbox back to the project.
        async with asyncio.timeout(60):
            while (new_id := (await harness.project_status(project_id)).sandbox_id) == old_id:
                await asyncio.sleep(0.1)
        assert new_id != old_id
        assert outcome.sandbox_url is not None
        await preview_text(outcome.sandbox_url, marker)


async def test_summary_without_files_is_an_error(agent_harness) -> None:
    script = {"default": {"turns": [terminal_turn("echo hi"), summary_turn("Nothing built.")]}}
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = await harness.new_project("Do nothing")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "ERROR"
        assert "without writing any files" in outcome.content
        [reply] = await replies(harness, project_id)
        assert reply.type == MessageType.ERROR and reply.fragment is None
        async with harness.db.session() as session:
            project = await queries.get_project(session, project_id)
        assert project.conversation_summary is None


async def test_iteration_limit_ends_in_an_error(agent_harness) -> None:
    script = {"default": {"turns": [terminal_turn("echo still working")], "after_last": "repeat"}}
    async with agent_harness(script, qai_max_iterations=3) as (harness, llm):
        project_id, message_id = await harness.new_project("Never finish")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "ERROR"
        assert "all 3 of its steps" in outcome.content
        [reply] = await replies(harness, project_id)
        assert reply.iterations == 3
        assert sum(llm.completed_counts().values()) == 3


async def test_follow_up_without_fresh_summary_does_not_resave_the_old_one(agent_harness) -> None:
    script = {
        "conversations": [
            {"match": "more", "turns": [terminal_turn("echo thinking")], "after_last": "repeat"}
        ],
        "default": {"turns": [write_turn("app/page.tsx", page("One")), summary_turn("One.")]},
    }
    async with agent_harness(script, qai_max_iterations=2) as (harness, _llm):
        project_id, first = await harness.new_project("Build one")
        await harness.submit(project_id, first)
        second = await harness.add_message(project_id, "Do more")
        outcome = await harness.submit(project_id, second)

        assert outcome.status.value == "ERROR"
        assert "One." not in outcome.content
        async with harness.db.session() as session:
            project = await queries.get_project(session, project_id)
        assert project.conversation_summary == "User: Build one\nAssistant: One."


async def test_model_mistakes_become_tool_errors_not_crashes(agent_harness) -> None:
    script = {
        "default": {
            "turns": [
                {"tool_calls": [{"name": "terminal", "arguments": "{not json"}]},
                {"tool_calls": [{"name": "deployToProd", "arguments": {}}]},
                write_turn("../outside.txt", "x"),
                terminal_turn("npm run dev"),
                write_turn("app/page.tsx", page("Recovered")),
                summary_turn("Recovered from mistakes."),
            ]
        }
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = await harness.new_project("Make mistakes")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "RESULT", outcome.content
        results = [
            e.message["content"] for e in await entries(harness, message_id) if e.role == "tool"
        ]
        assert "not valid JSON" in results[0]
        assert "unknown tool 'deployToProd'" in results[1]
        assert "Path refused" in results[2] and "nothing was written" in results[2]
        assert "dev server is already running" in results[3]
        assert results[4].startswith("Wrote 1 file(s): app/page.tsx")


async def accepted_submissions(harness: Harness, project_id: uuid.UUID) -> list[uuid.UUID]:
    """The message ids in the order the project workflow received their `enqueue` signals."""
    handle = harness.client.get_workflow_handle(project_workflow_id(project_id))
    history = await handle.fetch_history()
    return [
        uuid.UUID(json.loads(signal.input.payloads[0].data)["message_id"])
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
        and (signal := event.workflow_execution_signaled_event_attributes).signal_name == "enqueue"
    ]


async def test_two_messages_at_once_are_answered_in_order(agent_harness) -> None:
    requests = {"first": "The first request", "second": "The second request"}
    script = {
        "conversations": [
            {
                "match": f"<user_request>\n{text}",
                "turns": [
                    write_turn(f"app/{key}.tsx", f"export const {key} = 1;\n"),
                    summary_turn(f"{key} done."),
                ],
            }
            for key, text in requests.items()
        ]
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, first = await harness.new_project(requests["first"])
        second = await harness.add_message(project_id, requests["second"])
        # Sent truly at once: which arrives first is up to the server, so the test reads the
        # arrival order from the project's history and checks the answers follow it.
        outcomes = await asyncio.gather(
            harness.submit(project_id, first), harness.submit(project_id, second)
        )

        assert [o.status.value for o in outcomes] == ["RESULT", "RESULT"]
        arrival = await accepted_submissions(harness, project_id)
        assert sorted(arrival) == sorted([first, second])
        key_of = {first: "first", second: "second"}
        earlier, later = (key_of[message_id] for message_id in arrival)
        all_replies = await replies(harness, project_id)
        assert [r.reply_to_id for r in all_replies] == arrival
        # The later run saw the earlier one's answer, and not the other way round.
        later_payload = (await entries(harness, arrival[1]))[1].message["content"]
        assert f"Assistant: {earlier} done." in later_payload
        earlier_payload = (await entries(harness, arrival[0]))[1].message["content"]
        assert f"{later} done." not in earlier_payload
        async with harness.db.session() as session:
            project = await queries.get_project(session, project_id)
        assert project.conversation_summary.endswith(
            f"User: {requests[later]}\nAssistant: {later} done."
        )
        assert set(all_replies[-1].fragment.files) == {"app/first.tsx", "app/second.tsx"}


async def test_a_message_submitted_twice_is_answered_once(agent_harness) -> None:
    script = {
        "default": {"turns": [write_turn("app/a.tsx", "export {};\n"), summary_turn("Once.")]}
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Answer me once")
        await harness.accept(project_id, message_id)
        again, once_more = await asyncio.gather(
            harness.submit(project_id, message_id), harness.submit(project_id, message_id)
        )

        assert again == once_more
        assert again.status.value == "RESULT"
        assert [r.reply_to_id for r in await replies(harness, project_id)] == [message_id]
        assert len([r for r in llm.requests() if r.kind == "turn"]) == 2


async def test_rate_limit_and_server_error_are_retried(agent_harness) -> None:
    script = {
        "default": {
            "turns": [
                {
                    **write_turn("app/page.tsx", page("Retry")),
                    "faults": [{"status": 429, "retry_after": 1}, {"status": 500}],
                },
                summary_turn("Built after retries."),
            ]
        }
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build despite faults")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "RESULT", outcome.content
        first_turn = [r for r in llm.requests() if r.kind == "turn" and r.turn == 0]
        assert [r.status for r in first_turn] == [429, 500, 200]
        assert all(count == 1 for count in llm.completed_counts().values())


async def test_rejected_api_key_ends_fast_with_an_error(agent_harness) -> None:
    script = {"default": {"turns": [{"content": "never", "faults": [{"status": 401}] * 5}]}}
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Anything")
        outcome = await harness.submit(project_id, message_id)

        assert outcome.status.value == "ERROR"
        assert "API key" in outcome.content
        # Not retried: one request, so no back-off was waited through.
        assert len([r for r in llm.requests() if r.kind == "turn"]) == 1


async def test_project_continues_as_new_and_keeps_its_sandbox(agent_harness) -> None:
    from contract import ProjectInput
    from workflows.project import ProjectWorkflow, project_search_attributes

    script = {
        "conversations": [
            {"match": "second", "turns": [terminal_turn("ls app"), summary_turn("Looked.")]}
        ],
        "default": {"turns": [write_turn("app/page.tsx", page("One")), summary_turn("One.")]},
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, first = await harness.new_project("The first request")
        started = await harness.client.start_workflow(
            ProjectWorkflow.run,
            ProjectInput(project_id=project_id, continue_after=1),
            id=project_workflow_id(project_id),
            task_queue=harness.task_queue,
            search_attributes=project_search_attributes(project_id),
        )
        one = await harness.submit(project_id, first)
        sandbox_before = await harness.project_sandbox(project_id)
        second = await harness.add_message(project_id, "The second request")
        two = await harness.submit(project_id, second)

        assert one.status.value == two.status.value == "RESULT", two.content
        latest = await harness.client.get_workflow_handle(
            project_workflow_id(project_id)
        ).describe()
        assert latest.run_id != started.result_run_id  # the entity continued as new
        # ... and carried its sandbox across
        assert (await harness.project_status(project_id)).sandbox_id == sandbox_before
