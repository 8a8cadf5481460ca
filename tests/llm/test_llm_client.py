"""make_openai_client, chat_completion, usage_of and the Retry-After parsing of agent/llm.py."""

from __future__ import annotations

import email.utils
from datetime import timedelta

import openai
import pytest
from llm_helpers import TOOLS
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from agent.llm import (
    MAX_RETRY_AFTER,
    NON_RETRYABLE_LLM_ERROR_TYPES,
    PLACEHOLDER_API_KEY,
    LLMErrorType,
    chat_completion,
    classify_llm_error,
    make_openai_client,
    retry_after,
    usage_of,
)
from runtime.settings import Settings
from scripted_llm import scripted_llm_server

SCRIPT = {
    "title": "Title",
    "default": {
        "turns": [
            {"content": "one", "tool_calls": [{"name": "terminal", "arguments": {"command": "ls"}}]}
        ]
    },
}


def _settings(**values: object) -> Settings:
    values.setdefault("openai_api_key", None)
    values.setdefault("openai_base_url", None)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_client_for_a_base_url_without_key_uses_a_placeholder_and_never_retries():
    async with scripted_llm_server({**SCRIPT, "require_api_key": PLACEHOLDER_API_KEY}) as server:
        client = make_openai_client(_settings(openai_base_url=server.base_url, qai_llm_timeout=7))
        reply = await chat_completion(
            client, model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS
        )

    assert client.max_retries == 0
    assert client.timeout == 7
    assert client.api_key == PLACEHOLDER_API_KEY
    assert str(client.base_url).rstrip("/") == server.base_url
    assert reply.choices[0].message.content == "one"


async def test_client_uses_the_configured_key():
    async with scripted_llm_server({**SCRIPT, "require_api_key": "sk-real"}) as server:
        client = make_openai_client(
            _settings(openai_base_url=server.base_url, openai_api_key=SecretStr("sk-real"))
        )
        reply = await chat_completion(
            client, model="m", messages=[{"role": "user", "content": "x"}], tools=TOOLS
        )
    assert client.api_key == "sk-real"
    assert reply.choices[0].message.content == "one"


def test_no_key_and_no_base_url_is_a_non_retryable_configuration_error():
    with pytest.raises(ApplicationError) as caught:
        make_openai_client(_settings())
    assert caught.value.type == LLMErrorType.NOT_CONFIGURED
    assert caught.value.non_retryable
    assert "OPENAI_API_KEY" in caught.value.message


async def test_chat_completion_without_tools_is_a_title_request_and_usage_is_counted():
    async with scripted_llm_server(SCRIPT) as server:
        client = make_openai_client(_settings(openai_base_url=server.base_url))
        title = await chat_completion(
            client, model="small", messages=[{"role": "user", "content": "x"}], tool_choice="auto"
        )
        turn = await chat_completion(
            client,
            model="big",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS,
            tool_choice="auto",
            temperature=0.2,
            max_tokens=100,
            parallel_tool_calls=False,
        )

    assert title.choices[0].message.content == "Title"
    assert [r.kind for r in server.requests()] == ["title", "turn"]
    usage = usage_of(turn)
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"}
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_usage_of_a_completion_without_usage_is_zero():
    completion = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "hi"},
                }
            ],
        }
    )
    assert usage_of(completion) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2"}, timedelta(seconds=2)),
        ({"retry-after": "0.5"}, timedelta(seconds=0.5)),
        ({"retry-after-ms": "250"}, timedelta(milliseconds=250)),
        ({"retry-after-ms": "250", "retry-after": "9"}, timedelta(milliseconds=250)),
        ({"retry-after-ms": "junk", "retry-after": "9"}, timedelta(seconds=9)),
        ({"retry-after": "0"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "86400"}, MAX_RETRY_AFTER),
    ],
)
def test_retry_after_seconds_and_milliseconds(headers: dict[str, str], expected):
    assert retry_after(headers) == expected


def test_retry_after_http_date():
    now = 1_800_000_000.0
    future = email.utils.formatdate(now + 42, usegmt=True)
    past = email.utils.formatdate(now - 42, usegmt=True)
    assert retry_after({"retry-after": future}, now=now) == timedelta(seconds=42)
    assert retry_after({"retry-after": past}, now=now) is None


def test_other_exceptions_are_retryable_and_application_errors_pass_through():
    unexpected = classify_llm_error(ValueError("boom"))
    assert unexpected.type == LLMErrorType.UNEXPECTED
    assert not unexpected.non_retryable
    assert "ValueError: boom" in unexpected.message
    given = ApplicationError("already classified", type="X", non_retryable=True)
    assert classify_llm_error(given) is given


def test_non_retryable_types_list_matches_the_enum():
    assert LLMErrorType.RATE_LIMITED not in NON_RETRYABLE_LLM_ERROR_TYPES
    assert LLMErrorType.CONTEXT_LENGTH_EXCEEDED in NON_RETRYABLE_LLM_ERROR_TYPES
    assert LLMErrorType.AUTHENTICATION_FAILED in NON_RETRYABLE_LLM_ERROR_TYPES
