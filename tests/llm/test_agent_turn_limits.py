"""The model activity at a real model's limits, against the scripted server over HTTP and a real
PostgreSQL (tool results are written by the test, so no sandbox is needed): replies cut off at
the output limit, a context window the requests must fit, a provider's context-length error,
and the usage each reply records."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from openai import AsyncOpenAI
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import LlmActivities
from activities.services import Services
from contract import AgentTurnInput, AgentTurnResult
from runtime import metrics
from runtime.settings import Settings
from scripted_llm import ScriptedLLMServer, scripted_llm_server
from storage import queries, transcript
from storage.db import Database

SYSTEM = "You are a code agent. " * 200  # about 1 100 tokens, as a real system prompt


@asynccontextmanager
async def model(
    db: Database, script: dict[str, Any], **settings: Any
) -> AsyncIterator[tuple[ScriptedLLMServer, Services, uuid.UUID]]:
    async with scripted_llm_server(script) as server:
        config = Settings(
            _env_file=None,  # type: ignore[call-arg]
            openai_api_key="k",
            openai_base_url=server.base_url,
            **settings,
        )
        llm = AsyncOpenAI(api_key="k", base_url=server.base_url, max_retries=0)
        services = Services(settings=config, db=db, sandboxes=None, llm=llm)  # type: ignore[arg-type]
        async with db.session() as session:
            _, message = await queries.create_project(session, "limits", "build an app")
            await transcript.start(session, message.id, system=SYSTEM, user="build an app")
            await session.commit()
        try:
            yield server, services, message.id
        finally:
            await llm.close()


async def turn(services: Services, run_id: uuid.UUID, iteration: int) -> AgentTurnResult:
    return await ActivityEnvironment().run(
        LlmActivities(services).agent_turn,
        AgentTurnInput(run_id=run_id, iteration=iteration, model="scripted"),
    )


async def answer(
    services: Services, run_id: uuid.UUID, result: AgentTurnResult, iteration: int, text: str
) -> None:
    """Stand in for the tool activity: store a result for each call the workflow would run."""
    async with services.db.session() as session:
        for call in result.tool_calls:
            await transcript.append_entry(
                session,
                run_id,
                role="tool",
                iteration=iteration,
                tool_call_id=call.id,
                message={"role": "tool", "tool_call_id": call.id, "content": text},
            )
        await session.commit()


def counter(metric: Any, *labels: str) -> float:
    return (metric.labels(*labels) if labels else metric)._value.get()


BIG_PAGE = "export default function Page() {\n" + "  return <p>hi</p>;\n" * 400 + "}\n"


async def test_a_cut_off_tool_call_runs_nothing_and_the_model_is_told(clean_db: Database) -> None:
    script = {
        "default": {
            "turns": [
                {
                    "tool_calls": [
                        {
                            "name": "createOrUpdateFiles",
                            "arguments": {"files": [{"path": "app/page.tsx", "content": BIG_PAGE}]},
                        }
                    ]
                },
                {"content": "<task_summary>Done.</task_summary>"},
            ]
        }
    }
    cut_before = counter(metrics.CUT_OFF_REPLIES, "tool_calls")
    async with model(clean_db, script, qai_output_tokens=500, qai_context_tokens=16_000) as (
        server,
        services,
        run_id,
    ):
        first = await turn(services, run_id, 1)
        again = await turn(services, run_id, 1)  # a retried activity: nothing new
        second = await turn(services, run_id, 2)
        async with clean_db.session() as session:
            entries = await transcript.chat_entries(session, run_id)
            files = await transcript.file_count(session, run_id)
    assert first.tool_calls == [] and first.summary is None
    assert again.tool_calls == [] and again.replayed
    assert second.summary == "Done."
    assert files == 0
    assistant, told = entries[2], entries[3]
    assert assistant.finish_reason == "length"
    assert assistant.message["tool_calls"][0]["function"]["arguments"] == "{}"
    assert "cut off at the output limit (500 tokens)" in told.message["content"]
    assert (
        "editFiles" in told.message["content"] and "nothing was written" in told.message["content"]
    )
    # The model saw that result on its next call, and only two calls were paid for.
    sent = server.requests()[-1].messages
    assert any("cut off at the output limit" in str(m.get("content")) for m in sent)
    assert [r.max_tokens for r in server.requests()] == [500, 500]
    assert counter(metrics.CUT_OFF_REPLIES, "tool_calls") == cut_before + 1


async def test_a_cut_off_summary_is_not_final_and_the_model_is_asked_to_finish(
    clean_db: Database,
) -> None:
    script = {
        "default": {
            "turns": [
                {"content": "<task_summary>" + "A long summary. " * 300 + "</task_summary>"},
                {"content": "<task_summary>Built it.</task_summary>"},
            ]
        }
    }
    async with model(clean_db, script, qai_output_tokens=300) as (server, services, run_id):
        first = await turn(services, run_id, 1)
        second = await turn(services, run_id, 2)
    assert first.summary is None and first.tool_calls == []
    assert second.summary == "Built it."
    nudge = server.requests()[-1].messages[-1]
    assert (
        nudge["role"] == "user"
        and "cut off at the output limit before </task_summary>" in (nudge["content"])
    )


def _reading_script(iterations: int) -> dict[str, Any]:
    turns = [
        {"tool_calls": [{"name": "readFiles", "arguments": {"files": [f"data/{n}.json"]}}]}
        for n in range(iterations)
    ]
    return {
        "default": {"turns": [*turns, {"content": "<task_summary>Read it all.</task_summary>"}]}
    }


async def _read_loop(
    services: Services, run_id: uuid.UUID, iterations: int, size: int
) -> AgentTurnResult:
    result = None
    for iteration in range(1, iterations + 2):
        result = await turn(services, run_id, iteration)
        await answer(services, run_id, result, iteration, "r" * size)
    assert result is not None
    return result


async def test_a_long_run_fits_a_small_window_by_eliding_old_tool_results(
    clean_db: Database,
) -> None:
    window, output = 16_000, 2_000
    script = {**_reading_script(20), "context_tokens": window}
    elided_before = counter(metrics.ELISIONS, "elided")
    async with model(clean_db, script, qai_context_tokens=window, qai_output_tokens=output) as (
        server,
        services,
        run_id,
    ):
        last = await _read_loop(services, run_id, 20, 12_000)
        async with clean_db.session() as session:
            plan = await transcript.plan_for(session, run_id, 21)
            entries = await transcript.chat_entries(session, run_id)
    records = server.requests()
    assert last.summary == "Read it all."
    assert all(r.status == 200 for r in records), [r.error for r in records if r.status != 200]
    assert max(r.prompt_tokens + r.max_tokens for r in records) <= window
    assert plan is not None and len(plan["elided"]) >= 10
    assert counter(metrics.ELISIONS, "elided") - elided_before == len(plan["elided"])
    # The stored transcript stays whole; only what was sent was trimmed, with a stub that says
    # how to get the output back. System prompt and request are sent whole.
    assert all(e.message["content"] == "r" * 12_000 for e in entries if e.role == "tool")
    sent = records[-1].messages
    assert sent[0]["content"] == SYSTEM and sent[1]["content"] == "build an app"
    stub = next(m for m in sent if m["role"] == "tool")
    assert stub["content"].startswith("[output of readFiles data/0.json elided")
    assert "read it again" in stub["content"]
    # The last turns are sent whole.
    assert sent[-1]["content"] == "r" * 12_000
    # Elisions come in large steps: most requests start with the whole previous request.
    shares = sorted(r.shared_prefix for r in records if r.shared_prefix is not None)
    assert shares[len(shares) // 2] > 0.5


async def test_a_context_length_error_compacts_harder_and_retries_once(clean_db: Database) -> None:
    script = _reading_script(6)
    # The provider's window is smaller than the one configured: the 7th call is refused once.
    script["default"]["turns"][-1]["faults"] = [{"status": 400, "code": "context_length_exceeded"}]
    retries = counter(metrics.CONTEXT_RETRIES)
    async with model(clean_db, script) as (server, services, run_id):
        last = await _read_loop(services, run_id, 6, 8_000)
        async with clean_db.session() as session:
            plan = await transcript.plan_for(session, run_id, 7)
        replayed = await turn(services, run_id, 7)
    assert last.summary == "Read it all." and replayed.replayed
    refused, accepted = server.requests()[-2:]
    assert refused.status == 400 and accepted.status == 200
    assert accepted.prompt_tokens < refused.prompt_tokens / 2
    assert plan is not None and plan["hard"] and len(plan["elided"]) >= 4
    assert counter(metrics.CONTEXT_RETRIES) == retries + 1


async def test_a_request_that_never_fits_ends_with_words(clean_db: Database) -> None:
    script = {**_reading_script(1), "context_tokens": 3_000}  # smaller than the system prompt
    async with model(clean_db, script, qai_context_tokens=16_000, qai_output_tokens=2_000) as (
        server,
        services,
        run_id,
    ):
        with pytest.raises(ApplicationError) as caught:
            await turn(services, run_id, 1)
    error = caught.value
    assert error.non_retryable and error.type == "LLMContextLengthExceeded"
    assert "too long for the model's context window, even after" in error.message
    assert "QAI_CONTEXT_TOKENS is 16000" in error.message
    assert [r.status for r in server.requests()] == [400, 400]


async def test_usage_is_recorded_per_reply_with_cached_tokens(clean_db: Database) -> None:
    async with model(clean_db, _reading_script(3)) as (server, services, run_id):
        await _read_loop(services, run_id, 3, 500)
        async with clean_db.session() as session:
            usage = await transcript.run_usage(session, run_id)
    records = server.requests()
    assert usage["model_calls"] == len(records) == 4
    assert usage["prompt_tokens"] == sum(r.prompt_tokens for r in records)
    assert usage["cached_tokens"] == sum(r.cached_tokens for r in records) > 0


async def test_a_retried_call_sends_exactly_what_the_first_attempt_sent(clean_db: Database) -> None:
    window = 16_000
    script = {**_reading_script(8), "context_tokens": window}
    script["default"]["turns"][7]["faults"] = [{"status": 500}]
    async with model(clean_db, script, qai_context_tokens=window, qai_output_tokens=2_000) as (
        server,
        services,
        run_id,
    ):
        for iteration in range(1, 8):
            result = await turn(services, run_id, iteration)
            await answer(services, run_id, result, iteration, "r" * 12_000)
        with pytest.raises(ApplicationError):
            await turn(services, run_id, 8)
        # Meanwhile the transcript grew (say, check feedback): the retry still sends the same.
        async with clean_db.session() as session:
            await transcript.append_entry(
                session, run_id, role="user", iteration=9, message={"role": "user", "content": "x"}
            )
            await session.commit()
        await turn(services, run_id, 8)
    failed, retried = server.requests()[-2:]
    assert (failed.status, retried.status) == (500, 200)
    assert failed.messages == retried.messages
    assert any("elided" in str(m.get("content")) for m in retried.messages)
