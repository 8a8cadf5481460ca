"""Injected faults reach the real `openai` client and classify into the right Temporal errors."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import openai
import pytest
from llm_helpers import TOOLS, client_for
from temporalio.exceptions import ApplicationError

from agent.llm import LLMErrorType, chat_completion, classify_llm_error
from scripted_llm import ScriptedLLMServer, scripted_llm_server


def _script(*faults: dict[str, Any], title_faults: list[dict[str, Any]] | None = None) -> dict:
    return {
        "conversations": [
            {
                "match": "app",
                "title": "App",
                "title_faults": title_faults or [],
                "turns": [
                    {
                        "content": "Running ls.",
                        "tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}],
                        "faults": list(faults),
                    }
                ],
            }
        ]
    }


MESSAGES = [{"role": "user", "content": "build an app"}]


async def _call(server: ScriptedLLMServer, **client_options: Any) -> Any:
    return await chat_completion(
        client_for(server, **client_options), model="m", messages=MESSAGES, tools=TOOLS
    )


async def _fails(server: ScriptedLLMServer, **client_options: Any) -> ApplicationError:
    with pytest.raises(openai.OpenAIError) as caught:
        await _call(server, **client_options)
    return classify_llm_error(caught.value, model="m")


async def test_429_with_retry_after_then_success_counts_one_completed_call():
    async with scripted_llm_server(_script({"status": 429, "retry_after": 3})) as server:
        error = await _fails(server)
        reply = await _call(server)
        records = server.requests()

    assert error.type == LLMErrorType.RATE_LIMITED
    assert not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=3)
    assert error.details[0]["status_code"] == 429
    assert error.details[0]["retry_after_seconds"] == 3
    assert "429" in error.message
    assert reply.choices[0].message.tool_calls
    assert [(r.attempt, r.status, r.completed, r.fault) for r in records] == [
        (1, 429, False, "status 429"),
        (2, 200, True, None),
    ]
    assert server.completed_counts() == {("app", 0): 1}


async def test_retry_after_ms_and_http_date_headers_set_the_next_retry_delay():
    faults = [{"status": 429, "retry_after_ms": 1500}, {"status": 503, "retry_after": "soon"}]
    async with scripted_llm_server(_script(*faults)) as server:
        by_ms = await _fails(server)
        garbage = await _fails(server)

    assert by_ms.next_retry_delay == timedelta(seconds=1.5)
    assert garbage.next_retry_delay is None
    assert garbage.type == LLMErrorType.UNAVAILABLE
    assert not garbage.non_retryable


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, LLMErrorType.UNAVAILABLE),
        (502, LLMErrorType.UNAVAILABLE),
        (503, LLMErrorType.UNAVAILABLE),
        (408, LLMErrorType.TIMEOUT),
        (409, LLMErrorType.UNAVAILABLE),
    ],
)
async def test_transient_statuses_are_retryable(status: int, error_type: LLMErrorType):
    async with scripted_llm_server(_script({"status": status})) as server:
        error = await _fails(server)
        await _call(server)

    assert error.type == error_type
    assert not error.non_retryable
    assert error.details[0]["status_code"] == status
    assert server.completed_counts() == {("app", 0): 1}


@pytest.mark.parametrize(
    ("fault", "error_type", "words"),
    [
        ({"status": 401}, LLMErrorType.AUTHENTICATION_FAILED, "OPENAI_API_KEY"),
        ({"status": 403}, LLMErrorType.PERMISSION_DENIED, "refused access"),
        ({"status": 404}, LLMErrorType.NOT_FOUND, "QAI_MODEL"),
        ({"status": 400}, LLMErrorType.BAD_REQUEST, "invalid"),
        ({"status": 422}, LLMErrorType.BAD_REQUEST, "invalid"),
        (
            {"status": 400, "code": "context_length_exceeded"},
            LLMErrorType.CONTEXT_LENGTH_EXCEEDED,
            "too long",
        ),
        (
            {"status": 400, "message": "This model's maximum context length is 4096 tokens."},
            LLMErrorType.CONTEXT_LENGTH_EXCEEDED,
            "too long",
        ),
        (
            {"status": 429, "code": "insufficient_quota", "message": "You exceeded your quota."},
            LLMErrorType.QUOTA_EXCEEDED,
            "quota",
        ),
    ],
)
async def test_permanent_errors_are_non_retryable_with_words_for_users(
    fault: dict[str, Any], error_type: LLMErrorType, words: str
):
    async with scripted_llm_server(_script(fault)) as server:
        error = await _fails(server)

    assert error.type == error_type
    assert error.non_retryable
    assert error.next_retry_delay is None
    assert words in error.message
    assert str(fault["status"]) in error.message
    assert error.details[0]["status_code"] == fault["status"]
    assert server.completed_counts() == {}


async def test_error_bodies_are_openai_shaped():
    fault = {"status": 400, "code": "context_length_exceeded"}
    async with scripted_llm_server(_script(fault)) as server:
        with pytest.raises(openai.BadRequestError) as caught:
            await _call(server)

    error = caught.value
    assert error.code == "context_length_exceeded"
    assert error.type == "invalid_request_error"
    assert isinstance(error.body, dict)
    assert set(error.body) == {"message", "type", "param", "code"}
    assert "maximum context length" in error.body["message"]


async def test_malformed_arguments_then_well_formed():
    async with scripted_llm_server(_script({"malformed_arguments": True})) as server:
        broken = await _call(server)
        fixed = await _call(server)

    (bad,) = broken.choices[0].message.tool_calls or []
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad.function.arguments)
    (good,) = fixed.choices[0].message.tool_calls or []
    assert json.loads(good.function.arguments) == {"command": "ls"}
    assert bad.id == good.id  # the same turn, only the arguments differ
    assert [r.fault for r in server.requests()] == ["malformed arguments", None]


async def test_raw_string_arguments_are_sent_verbatim():
    script = {
        "default": {"turns": [{"tool_calls": [{"name": "terminal", "arguments": "{not json"}]}]}
    }
    async with scripted_llm_server(script) as server:
        reply = await _call(server)
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.arguments == "{not json"


async def test_slow_reply_times_out_the_client_and_is_not_counted_as_completed():
    async with scripted_llm_server(_script({"delay": 30})) as server:
        error = await _fails(server, timeout=0.3)
        async with asyncio.timeout(10):
            await server.wait_for(lambda log: log[0].cancelled)
        reply = await _call(server)
        first, second = server.requests()

    assert error.type == LLMErrorType.TIMEOUT
    assert not error.non_retryable
    assert (first.status, first.completed, first.fault) == (None, False, "delay 30s")
    assert first.error is not None and "closed the connection" in first.error
    assert reply.choices[0].message.tool_calls
    assert (second.status, second.completed) == (200, True)
    assert server.completed_counts() == {("app", 0): 1}


async def test_global_delay_applies_to_every_call():
    async with scripted_llm_server(_script(), delay=30) as server:
        error = await _fails(server, timeout=0.3)
        async with asyncio.timeout(10):
            await server.wait_for(lambda log: log[0].cancelled)
    assert error.type == LLMErrorType.TIMEOUT
    assert server.completed_counts() == {}


async def test_delay_then_status_in_one_fault():
    async with scripted_llm_server(_script({"delay": 0.05, "status": 500})) as server:
        error = await _fails(server)
    assert error.type == LLMErrorType.UNAVAILABLE
    assert server.requests()[0].fault == "delay 0.05s, status 500"


async def test_title_faults_apply_to_title_requests_only():
    script = _script(title_faults=[{"status": 500}])
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
        title = await client.chat.completions.create(model="m", messages=MESSAGES)
        turn = await _call(server)

    assert title.choices[0].message.content == "App"
    assert turn.choices[0].message.tool_calls
    assert server.completed_counts() == {("app", None): 1, ("app", 0): 1}


async def test_required_api_key_is_checked():
    script = {"require_api_key": "sk-right", "default": {"turns": [{"content": "hi"}]}}
    async with scripted_llm_server(script) as server:
        error = await _fails(server, api_key="sk-wrong")
        reply = await _call(server, api_key="sk-right")

    assert error.type == LLMErrorType.AUTHENTICATION_FAILED
    assert error.non_retryable
    assert error.message.startswith("The model provider rejected the API key (401).")
    assert error.details[0]["code"] == "invalid_api_key"
    assert reply.choices[0].message.content == "hi"


async def test_connection_refused_is_retryable():
    async with scripted_llm_server(_script()) as server:
        stopped = server
    error = await _fails(stopped)
    assert error.type == LLMErrorType.CONNECTION_FAILED
    assert not error.non_retryable
    assert "OPENAI_BASE_URL" in error.message


async def test_wait_for_sees_a_call_in_flight_and_its_cancellation():
    async with scripted_llm_server(_script({"delay": 30})) as server:
        call = asyncio.create_task(_call(server))
        async with asyncio.timeout(10):
            (in_flight,) = await server.wait_for(lambda log: len(log) == 1)
        assert (in_flight.status, in_flight.completed, in_flight.cancelled) == (None, False, False)
        call.cancel()
        async with asyncio.timeout(10):
            await server.wait_for(lambda log: log[0].cancelled)
    assert server.completed_counts() == {}
