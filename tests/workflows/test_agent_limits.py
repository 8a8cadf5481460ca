"""A whole run at a real model's limits, end to end (scripted model over HTTP, real sandbox and
dev server, real PostgreSQL): a targeted edit, a reply cut off at the output limit, and the run's
token budget, with the usage the reply records."""

from __future__ import annotations

import json
import uuid

import pytest

from runtime import metrics
from storage import events, queries, transcript
from storage.models import MessageRole
from storage.views import message_view
from tests.workflows.conftest import preview_text
from tests.workflows.test_code_agent import page, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "cached_tokens": 20}
BUDGET = 550
"""Four replies of 150 tokens reach it: the fifth call is never made."""

CUT_ARGUMENTS = '{"files": [{"path": "app/other/page.tsx", "content": "export default functi'


async def test_an_edit_a_cut_off_reply_and_the_budget_in_one_run(agent_harness) -> None:
    before, after = f"Before {uuid.uuid4().hex[:6]}", f"After {uuid.uuid4().hex[:6]}"
    edit = {
        "edits": [
            {"path": "app/page.tsx", "old": f"<h1>{before}</h1>", "new": f"<h1>{after}</h1>"},
            {"path": "app/page.tsx", "old": "<Button>Go</Button>", "new": "<Button>Start</Button>"},
        ]
    }
    script = {
        "conversations": [
            {
                "match": "nothing",
                "turns": [
                    {
                        "tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}],
                        "usage": {"prompt_tokens": 500, "completion_tokens": 100},
                    }
                ],
            }
        ],
        "default": {
            "turns": [
                {**write_turn("app/page.tsx", page(before)), "usage": USAGE},
                {"tool_calls": [{"name": "editFiles", "arguments": edit}], "usage": USAGE},
                {
                    "tool_calls": [{"name": "createOrUpdateFiles", "arguments": CUT_ARGUMENTS}],
                    "finish_reason": "length",
                    "usage": USAGE,
                },
                {
                    "tool_calls": [{"name": "terminal", "arguments": {"command": "ls app"}}],
                    "usage": USAGE,
                },
                {"content": "<task_summary>Never reached.</task_summary>", "usage": USAGE},
            ]
        },
    }

    def count(metric, *labels: str) -> float:
        return (metric.labels(*labels) if labels else metric)._value.get()

    edits_before = count(metrics.EDITS, "applied")
    cut_before = count(metrics.CUT_OFF_REPLIES, "tool_calls")
    cached_before = count(metrics.TOKENS_BY_KIND, "cached")
    stops_before = count(metrics.RUN_BUDGET_STOPS)
    async with agent_harness(script, qai_run_token_budget=BUDGET) as (harness, llm):
        project_id, message_id = await harness.new_project("A landing page")
        outcome = await harness.submit(project_id, message_id)
        empty_id, empty_message = await harness.new_project("Do nothing at all")
        empty = await harness.submit(empty_id, empty_message)
        await preview_text(outcome.sandbox_url, after)
        async with harness.db.session() as session:
            reply = next(
                m
                for m in await queries.get_messages(session, project_id)
                if m.role == MessageRole.ASSISTANT
            )
            view = message_view(reply)
            entries = await transcript.chat_entries(session, message_id)
            tool_events = [
                e for e in await events.after(session, project_id, 0) if e.kind == "tool"
            ]
            shown_diffs = await events.edit_diffs(session, project_id)

    # The budget: four paid replies, no fifth call and no title call; the checks still ran.
    assert outcome.status.value == "RESULT", outcome.content
    assert f"QAI_RUN_TOKEN_BUDGET = {BUDGET} tokens) was reached" in outcome.content
    turns = [r for r in llm.requests() if r.kind == "turn" and r.conversation == "default"]
    assert [r.turn for r in turns] == [0, 1, 2, 3]
    assert not [r for r in llm.requests() if r.kind == "title"]
    assert reply.fragment is not None and reply.fragment.checks["status"] == "passed"
    # The edit is in the files the user gets, and nothing of the cut-off reply was written.
    source = reply.fragment.files["app/page.tsx"]
    assert f"<h1>{after}</h1>" in source and "<Button>Start</Button>" in source
    assert before not in source and "app/other/page.tsx" not in reply.fragment.files
    (edited,) = [e.data for e in tool_events if e.data["name"] == "editFiles"]
    assert edited["ok"] and edited["brief"] == "edited 1 file(s) +1 -1"
    (diff,) = edited["diffs"]
    assert shown_diffs == {str(message_id): [diff]}  # what the conversation shows
    assert (
        diff["path"] == "app/page.tsx"
        and f'+  return <main className="p-8"><h1>{after}' in (diff["diff"])
    )
    # The cut-off call was answered without running, and the model went on.
    cut = next(e for e in entries if e.role == "assistant" and e.finish_reason == "length")
    told = next(e for e in entries if e.tool_call_id == cut.message["tool_calls"][0]["id"])
    assert "cut off at the output limit" in told.message["content"]
    assert json.loads(cut.message["tool_calls"][0]["function"]["arguments"]) == {}
    # Usage: the sums of what the scripted server reported.
    assert view["usage"] == {
        "prompt_tokens": 480,
        "completion_tokens": 120,
        "cached_tokens": 80,
        "total_tokens": 600,
        "model_calls": 4,
    }
    # The metrics the worker (in this process) counted.
    assert count(metrics.EDITS, "applied") == edits_before + 2
    assert count(metrics.CUT_OFF_REPLIES, "tool_calls") == cut_before + 1
    assert count(metrics.TOKENS_BY_KIND, "cached") == cached_before + 80
    assert count(metrics.RUN_BUDGET_STOPS) == stops_before + 2
    # Without a file written, the budget ends the run in an ERROR that says so.
    assert empty.status.value == "ERROR"
    assert f"QAI_RUN_TOKEN_BUDGET = {BUDGET} tokens) was reached before anything" in empty.content
