"""Helpers for the LLM tests: an `openai` client for a scripted server and a tiny agent loop."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from agent.tools import TOOL_DEFINITIONS
from scripted_llm import ScriptedLLMServer

TOOLS: list[dict[str, Any]] = TOOL_DEFINITIONS


def client_for(server: ScriptedLLMServer, **options: Any) -> openai.AsyncOpenAI:
    options.setdefault("api_key", "test-key")
    options.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.base_url, **options)


def assistant_message(completion: ChatCompletion) -> dict[str, Any]:
    """The assistant message as it goes back into `messages` on the next call."""
    message = completion.choices[0].message
    data: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    return data


def tool_results(completion: ChatCompletion, text: str = "ok") -> list[dict[str, Any]]:
    calls = completion.choices[0].message.tool_calls or []
    return [{"role": "tool", "tool_call_id": call.id, "content": text} for call in calls]


async def run_conversation(
    client: openai.AsyncOpenAI, prompt: str, max_turns: int = 10
) -> list[ChatCompletion]:
    """Drive the model like the agent does until a reply carries <task_summary>."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a code agent."},
        {"role": "user", "content": prompt},
    ]
    replies: list[ChatCompletion] = []
    for _ in range(max_turns):
        completion = await client.chat.completions.create(
            model="gpt-test", messages=messages, tools=TOOLS
        )
        replies.append(completion)
        if "<task_summary>" in (completion.choices[0].message.content or ""):
            return replies
        messages.append(assistant_message(completion))
        messages.extend(tool_results(completion))
    raise AssertionError(f"no <task_summary> after {max_turns} turns")


def arguments_of(completion: ChatCompletion) -> list[tuple[str, Any]]:
    calls = completion.choices[0].message.tool_calls or []
    return [(call.function.name, json.loads(call.function.arguments)) for call in calls]
