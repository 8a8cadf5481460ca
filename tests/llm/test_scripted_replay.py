"""The scripted model replays turns statelessly over real HTTP with the real `openai` client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from llm_helpers import (
    TOOLS,
    arguments_of,
    assistant_message,
    client_for,
    run_conversation,
    tool_results,
)

from agent.llm import LLMErrorType, chat_completion, classify_llm_error, usage_of
from scripted_llm import DEMO_SCRIPT, load_script, scripted_llm_server


def _messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "system"}, {"role": "user", "content": prompt}]


async def test_turns_replay_in_order_with_openai_tool_call_format(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        replies = await run_conversation(client, "Build me a TODO app")

    assert len(replies) == 3
    first = replies[0].choices[0]
    assert first.finish_reason == "tool_calls"
    assert first.message.content == "Writing the page."
    (call,) = first.message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "createOrUpdateFiles"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {
        "files": [{"path": "app/page.tsx", "content": "export {}"}]
    }
    assert arguments_of(replies[1]) == [("terminal", {"command": "ls"})]
    assert replies[1].choices[0].message.content is None
    last = replies[2].choices[0]
    assert last.finish_reason == "stop"
    assert last.message.tool_calls is None
    assert last.message.content == "<task_summary>Done.</task_summary>"
    # Tool call ids are unique across turns, so tool results cannot be confused.
    ids = [c.id for r in replies for c in (r.choices[0].message.tool_calls or [])]
    assert len(ids) == len(set(ids))


async def test_same_request_gets_the_same_reply(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        messages = _messages("todo please")
        first = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
        again = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
        records = server.requests()

    assert again.id == first.id
    assert again.choices[0].message == first.choices[0].message
    assert [(r.turn, r.attempt, r.status, r.completed) for r in records] == [
        (0, 1, 200, True),
        (0, 2, 200, True),
    ]
    assert server.completed_counts() == {("todo", 0): 2}


async def test_turn_index_is_the_number_of_assistant_messages(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        first = await client.chat.completions.create(
            model="m", messages=_messages("todo"), tools=TOOLS
        )
        messages = [*_messages("todo"), assistant_message(first), *tool_results(first)]
        second = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
        messages += [assistant_message(second), *tool_results(second)]
        third = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
        # Going back to an earlier prefix replays the earlier turn: nothing is remembered.
        replayed = await client.chat.completions.create(
            model="m", messages=_messages("todo"), tools=TOOLS
        )

    assert arguments_of(second) == [("terminal", {"command": "ls"})]
    assert third.choices[0].message.content == "<task_summary>Done.</task_summary>"
    assert replayed.choices[0].message == first.choices[0].message


async def test_concurrent_conversations_do_not_interfere(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        todo, weather, other = await asyncio.gather(
            run_conversation(client, "a todo list"),
            run_conversation(client, "what is the weather"),
            run_conversation(client, "something else entirely"),
        )
        completed = server.completed_counts()

    assert [r.choices[0].message.content for r in todo][-1] == "<task_summary>Done.</task_summary>"
    assert arguments_of(weather[0]) == [("readFiles", {"files": ["a.txt"]})]
    assert weather[-1].choices[0].message.content == "<task_summary>Weather.</task_summary>"
    assert [r.choices[0].message.content for r in other] == [
        "<task_summary>Default.</task_summary>"
    ]
    assert completed == {
        ("todo", 0): 1,
        ("todo", 1): 1,
        ("todo", 2): 1,
        ("weather", 0): 1,
        ("weather", 1): 1,
        ("default", 0): 1,
    }


async def test_match_uses_the_first_user_message_case_insensitively_first_match_wins(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        both = await client.chat.completions.create(
            model="m", messages=_messages("TODO and Weather"), tools=TOOLS
        )
        later = [
            *_messages("hello"),
            {"role": "user", "content": "todo"},
        ]
        only_later = await client.chat.completions.create(model="m", messages=later, tools=TOOLS)
        parts = [
            {"role": "user", "content": [{"type": "text", "text": "the weather today"}]},
        ]
        by_parts = await client.chat.completions.create(model="m", messages=parts, tools=TOOLS)

    assert arguments_of(both)[0][0] == "createOrUpdateFiles"
    assert only_later.choices[0].message.content == "<task_summary>Default.</task_summary>"
    assert arguments_of(by_parts) == [("readFiles", {"files": ["a.txt"]})]
    assert [r.conversation for r in server.requests()] == ["todo", "default", "weather"]


async def test_past_the_last_turn_repeats_it_by_default():
    script = {
        "default": {
            "turns": [{"tool_calls": [{"name": "terminal", "arguments": {"command": "true"}}]}]
        }
    }
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        messages = _messages("never finishes")
        for _ in range(5):
            completion = await client.chat.completions.create(
                model="m", messages=messages, tools=TOOLS
            )
            assert arguments_of(completion) == [("terminal", {"command": "true"})]
            messages += [assistant_message(completion), *tool_results(completion)]
        ids = [r.turn for r in server.requests()]
    assert ids == list(range(5))


async def test_after_last_error_is_a_clear_non_retryable_error():
    script = {"default": {"after_last": "error", "turns": [{"tool_calls": [{"name": "terminal"}]}]}}
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        first = await client.chat.completions.create(
            model="m", messages=_messages("x"), tools=TOOLS
        )
        messages = [*_messages("x"), assistant_message(first), *tool_results(first)]
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)

    assert caught.value.code == "scripted_script_exhausted"
    error = classify_llm_error(caught.value)
    assert error.non_retryable
    assert error.type == LLMErrorType.BAD_REQUEST
    assert "has 1 turns" in error.message


async def test_no_match_without_default_is_a_clear_error():
    script = {"conversations": [{"match": "todo", "turns": [{"content": "x"}]}]}
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="m", messages=_messages("a blog"), tools=TOOLS
            )
        title = await client.chat.completions.create(model="m", messages=_messages("a blog"))

    assert caught.value.code == "scripted_no_match"
    assert "a blog" in caught.value.message
    assert title.choices[0].message.content == "Scripted app"


async def test_requests_without_tools_get_the_title(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        todo = await client.chat.completions.create(model="m", messages=_messages("todo app"))
        weather = await client.chat.completions.create(model="m", messages=_messages("weather"))
        records = server.requests()

    assert todo.choices[0].message.content == "Todo title"
    assert todo.choices[0].finish_reason == "stop"
    assert weather.choices[0].message.content == "Script title"
    assert [(r.kind, r.conversation, r.turn) for r in records] == [
        ("title", "todo", None),
        ("title", "weather", None),
    ]
    assert server.completed_counts() == {("todo", None): 1, ("weather", None): 1}


async def test_usage_is_reported_and_can_be_scripted():
    script = {
        "default": {
            "turns": [
                {"content": "first", "tool_calls": [{"name": "terminal"}]},
                {"content": "second", "usage": {"prompt_tokens": 1000, "completion_tokens": 50}},
            ]
        }
    }
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        first = await client.chat.completions.create(
            model="m", messages=_messages("x " * 400), tools=TOOLS
        )
        messages = [*_messages("x " * 400), assistant_message(first), *tool_results(first)]
        second = await client.chat.completions.create(model="m", messages=messages, tools=TOOLS)

    estimated = usage_of(first)
    assert estimated["prompt_tokens"] > 100  # grows with the request
    assert estimated["total_tokens"] == estimated["prompt_tokens"] + estimated["completion_tokens"]
    assert usage_of(second) == {
        "prompt_tokens": 1000,
        "completion_tokens": 50,
        "total_tokens": 1050,
        "cached_tokens": 0,
    }


async def test_streaming_gives_the_same_message_as_non_streaming(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        plain = await client.chat.completions.create(
            model="m", messages=_messages("todo"), tools=TOOLS
        )
        stream = await client.chat.completions.create(
            model="m",
            messages=_messages("todo"),
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        content = ""
        calls: dict[int, dict[str, str]] = {}
        finish = None
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                content += choice.delta.content or ""
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += delta.id or ""
                    if delta.function:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""

    message = plain.choices[0].message
    assert content == message.content
    assert finish == "tool_calls"
    (tool_call,) = message.tool_calls or []
    assert calls == {
        0: {
            "id": tool_call.id,
            "name": tool_call.function.name,
            "arguments": tool_call.function.arguments,
        }
    }
    assert usage is not None
    assert usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]
    assert [r.stream for r in server.requests()] == [False, True]


async def test_models_endpoint_lists_the_scripted_models():
    script = {"models": ["scripted", "gpt-test"], "default": {"turns": [{"content": "x"}]}}
    async with scripted_llm_server(script) as server:
        client = client_for(server)
        models = await client.models.list()
        one = await client.models.retrieve("gpt-test")
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("nope")
        # Any model name is accepted for completions, so QAI_MODEL needs no change.
        reply = await chat_completion(
            client, model="gpt-4.1", messages=_messages("hi"), tools=TOOLS
        )

    assert [m.id for m in models.data] == ["scripted", "gpt-test"]
    assert one.id == "gpt-test"
    assert reply.model == "gpt-4.1"


async def test_test_endpoints_expose_and_reset_the_log(three_turns):
    async with scripted_llm_server(three_turns) as server:
        client = client_for(server)
        await client.chat.completions.create(model="m", messages=_messages("todo"), tools=TOOLS)
        root = server.base_url.removesuffix("/v1")
        async with httpx.AsyncClient(base_url=root) as http:
            log = (await http.get("/_scripted/requests")).json()
            with_messages = (await http.get("/_scripted/requests?messages=1")).json()
            completed = (await http.get("/_scripted/completed")).json()
            assert (await http.post("/_scripted/reset")).json() == {"reset": True}
            after = (await http.get("/_scripted/requests")).json()
            unknown = await http.post("/v1/embeddings", json={})

    (record,) = log["requests"]
    assert record["conversation"] == "todo"
    assert record["turn"] == 0
    assert record["attempt"] == 1
    assert record["status"] == 200
    assert record["completed"] is True
    assert "messages" not in record
    assert with_messages["requests"][0]["messages"][1] == {"role": "user", "content": "todo"}
    assert log["completed"] == [{"conversation": "todo", "turn": 0, "count": 1}]
    assert completed == {"completed": log["completed"]}
    assert after == {"requests": [], "completed": []}
    assert server.requests() == []
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_url"


async def test_invalid_request_bodies_get_openai_shaped_errors(three_turns):
    async with (
        scripted_llm_server(three_turns) as server,
        httpx.AsyncClient(base_url=server.base_url) as http,
    ):
        not_json = await http.post("/chat/completions", content=b"{nope")
        no_messages = await http.post("/chat/completions", json={"model": "m", "messages": []})
        no_model = await http.post(
            "/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
        )

    for response in (not_json, no_messages, no_model):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in no_messages.json()["error"]["message"]
    assert "model" in no_model.json()["error"]["message"]
    assert [r.kind for r in server.requests()] == ["invalid", "invalid", "invalid"]


async def test_demo_script_builds_the_todo_app_and_edits_it_for_dark():
    script = load_script(DEMO_SCRIPT)
    async with scripted_llm_server(DEMO_SCRIPT) as server:
        client = client_for(server)
        build = await run_conversation(client, "Build a todo app with filters")
        dark = await run_conversation(client, "Previous: a todo app.\nNow: make it dark")
        title = await client.chat.completions.create(model="m", messages=_messages("todo app"))

    assert script.default is not None
    allowed = {"terminal", "createOrUpdateFiles", "readFiles"}
    written: dict[str, str] = {}
    for reply in [*build, *dark]:
        for name, arguments in arguments_of(reply):
            assert name in allowed
            if name == "createOrUpdateFiles":
                for file in arguments["files"]:
                    assert not file["path"].startswith("/")
                    written[f"{len(written)}:{file['path']}"] = file["content"]
    pages = [content for key, content in written.items() if key.endswith(":app/page.tsx")]
    assert len(pages) == 2
    for page in pages:
        assert page.startswith('"use client";')
        assert 'from "@/components/ui/checkbox"' not in page  # the item component owns it
        assert 'from "@/components/todo-item"' in page
        assert 'from "lucide-react"' in page
    assert "dark" in pages[1] and "dark" not in pages[0]
    assert "<task_summary>" in (build[-1].choices[0].message.content or "")
    assert "<task_summary>" in (dark[-1].choices[0].message.content or "")
    assert arguments_of(dark[0]) == [("readFiles", {"files": ["app/page.tsx"]})]
    assert title.choices[0].message.content == "Task tracker"
