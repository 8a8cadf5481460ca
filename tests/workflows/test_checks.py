"""A broken first draft is fixed on the server: scripted models that write broken pages.

Real tsc, a real Next.js dev server answering the routes, its real log; the scripted model over
HTTP. Each scripted model sees its errors only through the feedback message the run sends.
"""

from __future__ import annotations

import uuid

import pytest

from storage.models import Message
from tests.workflows.conftest import preview_text
from tests.workflows.test_code_agent import entries, replies, summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def fine_page(marker: str) -> str:
    return f"export default function Page() {{ return <h1>{marker}</h1>; }}\n"


def typed_page(marker: str, line: int) -> str:
    """A page whose `line`-th line assigns a string to a number (a type error tsc reports)."""
    padding = "\n" * (line - 1)
    return (
        f"{padding}const count: number = 'not a number';\n"
        f"export default function Page() {{ return <h1>{marker} {{count}}</h1>; }}\n"
    )


async def feedback_messages(harness, run_id: uuid.UUID) -> list[str]:
    return [
        e.message["content"]
        for e in await entries(harness, run_id)
        if e.role == "user" and e.iteration > 0
    ]


async def only_reply(harness, project_id: uuid.UUID) -> Message:
    [reply] = await replies(harness, project_id)
    assert reply.fragment is not None
    return reply


async def test_a_compile_error_is_fixed_before_the_user_sees_it(agent_harness) -> None:
    marker = f"Fixed {uuid.uuid4().hex[:6]}"
    broken = (
        "import missing from './missing';\n"
        "export default function Page() { return <h1>{missing}</h1>; }\n"
    )
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", broken),
                summary_turn("A page."),
                write_turn("app/page.tsx", fine_page(marker)),
                summary_turn("A page, fixed."),
            ]
        }
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build a page")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.content == "A page, fixed."

        reply = await only_reply(harness, project_id)
        assert reply.fragment.checks == {
            "status": "passed",
            "errors": [],
            "skipped": [],
            "rounds": 1,
            "ran": ["types", "routes", "server_log", "browser"],
        }
        [sent] = await feedback_messages(harness, message_id)
        assert "Can't resolve './missing'" in sent
        assert "app/page.tsx:1" in sent
        assert "[types] app/page.tsx:1: TS2307: Cannot find module './missing'" in sent
        assert sent.endswith("Fix these, then finish with <task_summary>.")
        assert len(llm.completed_counts()) == 5  # four turns and the title
        await preview_text(reply.fragment.sandbox_url, marker)


async def test_a_type_error_is_fixed(agent_harness) -> None:
    marker = f"Typed {uuid.uuid4().hex[:6]}"
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", typed_page("typed", 1)),
                summary_turn("A typed page."),
                write_turn("app/page.tsx", fine_page(marker)),
                summary_turn("A typed page, fixed."),
            ]
        }
    }
    async with agent_harness(script) as (harness, _llm):
        project_id, message_id = await harness.new_project("Build a typed page")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content

        reply = await only_reply(harness, project_id)
        assert reply.fragment.checks is not None
        assert reply.fragment.checks["status"] == "passed"
        assert reply.fragment.checks["rounds"] == 1
        [sent] = await feedback_messages(harness, message_id)
        assert "[types] app/page.tsx:1: TS2322" in sent


async def test_a_model_that_never_fixes_ends_in_a_result_with_failed_checks(
    agent_harness,
) -> None:
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", typed_page("first", 1)),
                summary_turn("Try 1."),
                write_turn("app/page.tsx", typed_page("second", 2)),
                summary_turn("Try 2."),
                write_turn("app/page.tsx", typed_page("third", 3)),
                summary_turn("Try 3."),
            ]
        }
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build a stubborn page")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.content == "Try 3."

        checks = (await only_reply(harness, project_id)).fragment.checks
        assert checks is not None
        assert checks["status"] == "failed" and checks["rounds"] == 2
        assert [(e["check"], e["file"], e["line"]) for e in checks["errors"]] == [
            ("types", "app/page.tsx", 3)
        ]
        assert len(await feedback_messages(harness, message_id)) == 2
        assert len(llm.completed_counts()) == 7  # six turns and the title: two rounds, no more


async def test_the_same_errors_twice_stop_the_fixing_early(agent_harness) -> None:
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", typed_page("same", 1)),
                summary_turn("Try 1."),
                summary_turn("Try 2, changing nothing."),
                summary_turn("never reached"),
            ]
        }
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build a page that stays broken")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.content == "Try 2, changing nothing."
        checks = (await only_reply(harness, project_id)).fragment.checks
        assert checks is not None and checks["status"] == "failed" and checks["rounds"] == 1
        # The first draft, one fix round that changed nothing, the title: no second round.
        assert len(llm.completed_counts()) == 4


async def test_a_fine_page_passes_without_an_extra_model_call(agent_harness) -> None:
    marker = f"Fine {uuid.uuid4().hex[:6]}"
    script = {
        "default": {"turns": [write_turn("app/page.tsx", fine_page(marker)), summary_turn("Fine.")]}
    }
    async with agent_harness(script) as (harness, llm):
        project_id, message_id = await harness.new_project("Build a fine page")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        checks = (await only_reply(harness, project_id)).fragment.checks
        assert checks == {
            "status": "passed",
            "errors": [],
            "skipped": [],
            "rounds": 0,
            "ran": ["types", "routes", "server_log", "browser"],
        }
        assert await feedback_messages(harness, message_id) == []
        assert len(llm.completed_counts()) == 3  # two turns and the title
