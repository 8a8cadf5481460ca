"""The scripted model behaves like a real provider at its limits: replies cut at max_tokens,
a context window with OpenAI's error, usage with cached tokens; and the agent's side of it:
the error is classified, the cut stream is reassembled with its finish reason."""

from __future__ import annotations

import json

import pytest
from llm_helpers import TOOLS, client_for

from agent.llm import LLMErrorType, classify_llm_error, stream_chat_completion, usage_of
from scripted_llm import scripted_llm_server

BIG = "x" * 4000


def _script(**extra) -> dict:
    return {
        "default": {
            "turns": [
                {
                    "tool_calls": [
                        {
                            "name": "createOrUpdateFiles",
                            "arguments": {"files": [{"path": "a.tsx", "content": BIG}]},
                        },
                        {"name": "terminal", "arguments": {"command": "ls"}},
                    ]
                },
                {"content": "<task_summary>" + "y" * 2000 + "</task_summary>"},
            ]
        },
        **extra,
    }


async def _nothing(_: str) -> None:
    return None


async def test_a_reply_over_max_tokens_is_cut_with_finish_reason_length() -> None:
    async with scripted_llm_server(_script()) as server:
        client = client_for(server)
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]
        cut = await stream_chat_completion(
            client, model="m", messages=messages, tools=TOOLS, on_text=_nothing, max_tokens=500
        )
        whole = await stream_chat_completion(
            client, model="m", messages=messages, tools=TOOLS, on_text=_nothing
        )
    choice = cut.choices[0]
    assert choice.finish_reason == "length"
    (call,) = choice.message.tool_calls or []  # the second call was never reached
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)
    assert len(call.function.arguments) == 2000 and usage_of(cut)["completion_tokens"] == 500
    assert whole.choices[0].finish_reason == "tool_calls"
    assert len(whole.choices[0].message.tool_calls or []) == 2
    assert server.requests()[0].max_tokens == 500


async def test_a_request_over_the_window_gets_openais_context_length_error() -> None:
    async with scripted_llm_server(_script(context_tokens=4000)) as server:
        client = client_for(server)
        small = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]
        fits = await stream_chat_completion(
            client, model="m", messages=small, tools=TOOLS, on_text=_nothing, max_tokens=1500
        )
        assert fits.choices[0].finish_reason == "tool_calls"
        large = [*small, {"role": "user", "content": "z" * 12000}]
        with pytest.raises(Exception) as caught:
            await stream_chat_completion(
                client, model="m", messages=large, tools=TOOLS, on_text=_nothing, max_tokens=1500
            )
    error = classify_llm_error(caught.value)
    assert error.type == LLMErrorType.CONTEXT_LENGTH_EXCEEDED and error.non_retryable
    assert caught.value.status_code == 400 and caught.value.code == "context_length_exceeded"
    assert "maximum context length is 4000 tokens" in str(caught.value)


async def test_usage_reports_the_prefix_shared_with_the_last_request_as_cached() -> None:
    async with scripted_llm_server(_script()) as server:
        client = client_for(server)
        base = [{"role": "system", "content": "s" * 8000}, {"role": "user", "content": "go"}]
        first = await stream_chat_completion(
            client, model="m", messages=base, tools=TOOLS, on_text=_nothing
        )
        assert usage_of(first)["cached_tokens"] == 0
        grown = [
            *base,
            {"role": "assistant", "content": "", "tool_calls": []},
            {"role": "user", "content": "more"},
        ]
        second = await stream_chat_completion(
            client, model="m", messages=grown, tools=TOOLS, on_text=_nothing
        )
    usage = usage_of(second)
    assert 1024 <= usage["cached_tokens"] <= usage["prompt_tokens"]
    assert usage["cached_tokens"] % 128 == 0
    # The prompt counts the tool schemas too, as providers do.
    assert usage_of(first)["prompt_tokens"] > len(json.dumps(base)) // 4
    record = server.requests()[1]
    assert record.shared_prefix is not None and 0.9 < record.shared_prefix < 1
