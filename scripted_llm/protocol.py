"""OpenAI Chat Completions bodies: completions, stream chunks, errors, model lists.

Kept apart from the server so the wire format is in one place and easy to check
against the `openai` client's types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from scripted_llm.script import Fault, ToolCall

JSON = dict[str, Any]


def first_user_text(messages: list[Any]) -> str:
    """Text of the first user message (string content or text parts)."""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


IMAGES_REFUSED = "Invalid content type. image_url is only supported by certain models."
"""OpenAI's answer when a model without vision gets an image part."""
INVALID_IMAGE = "You uploaded an unsupported image. Please make sure your image is valid."


def image_parts(messages: list[Any]) -> list[JSON]:
    """Every `image_url` part of the request: where it is, its type, size and dimensions.

    A data URL is decoded (Pillow reads the dimensions); any other URL is recorded as given.
    Raises ValueError for a data URL that holds no valid image, as providers refuse those.
    """
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    found = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = str((part.get("image_url") or {}).get("url", ""))
            record: JSON = {"message": index, "role": message.get("role"), "url": url[:64]}
            if url.startswith("data:"):
                header, _, payload = url.partition(",")
                try:
                    data = base64.b64decode(payload, validate=True)
                    image = Image.open(io.BytesIO(data))
                except (binascii.Error, UnidentifiedImageError, OSError):
                    raise ValueError(INVALID_IMAGE) from None
                record.update(
                    content_type=header[5:].split(";")[0],
                    bytes=len(data),
                    width=image.width,
                    height=image.height,
                    format=image.format,
                )
            found.append(record)
    return found


def count_assistant_messages(messages: list[Any]) -> int:
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def malformed(arguments: str) -> str:
    """Arguments text that is certainly not valid JSON."""
    if arguments.endswith("}"):
        return arguments[:-1]
    return arguments + "}}"


def estimate_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters per token."""
    return max(1, len(text) // 4)


def tool_calls_body(calls: list[ToolCall], ids: list[str], malformed_args: bool) -> list[JSON]:
    body = []
    for call, call_id in zip(calls, ids, strict=True):
        arguments = call.arguments_text()
        body.append(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": malformed(arguments) if malformed_args else arguments,
                },
            }
        )
    return body


def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def prompt_tokens(body: JSON) -> int:
    """The request's size as a provider counts it: its messages and its tool schemas."""
    size = estimate_tokens(json.dumps(body.get("messages")))
    if body.get("tools"):
        size += estimate_tokens(json.dumps(body["tools"]))
    return size


CACHE_BLOCK = 128
CACHE_MINIMUM = 1024


def cached_tokens(previous: str | None, current: str) -> int:
    """Tokens a prompt cache would serve: the prefix shared with the thread's last request,
    in 128-token blocks from 1024 tokens on, as OpenAI reports `cached_tokens`."""
    if not previous:
        return 0
    tokens = shared_prefix_chars(previous, current) // 4
    return 0 if tokens < CACHE_MINIMUM else tokens - tokens % CACHE_BLOCK


def shared_prefix_chars(previous: str, current: str) -> int:
    """Characters at the start of `current` equal to the start of `previous`."""
    low, high = 0, min(len(previous), len(current))
    while low < high:  # binary search on the longest equal prefix
        middle = (low + high + 1) // 2
        if previous[:middle] == current[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def truncate_output(
    content: str | None, calls: list[JSON], max_tokens: int
) -> tuple[str | None, list[JSON], bool]:
    """What a provider sends when the reply reaches `max_tokens`: the text and the tool calls'
    arguments cut at about max_tokens * 4 characters; True when something was cut."""
    room = max_tokens * 4
    produced = len(content or "") + sum(len(c["function"]["arguments"]) for c in calls)
    if produced // 4 <= max_tokens:
        return content, calls, False
    text = content or ""
    if len(text) >= room:
        return text[:room], [], True
    room -= len(text)
    kept: list[JSON] = []
    for call in calls:
        arguments = call["function"]["arguments"]
        if len(arguments) <= room:
            kept.append(call)
            room -= len(arguments)
            continue
        kept.append({**call, "function": {**call["function"], "arguments": arguments[:room]}})
        break
    return content, kept, True


def context_length_message(window: int, prompt: int, completion: int) -> str:
    """OpenAI's words for a request over the context window."""
    return (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion."
    )


def completion_body(
    *,
    completion_id: str,
    model: str,
    content: str | None,
    tool_calls: list[JSON],
    finish_reason: str,
    usage: JSON,
) -> JSON:
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "scripted",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": usage,
    }


def _pieces(text: str, size: int = 24) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def stream_chunks(completion: JSON, include_usage: bool) -> Iterator[JSON]:
    """The chunks a streaming server sends for `completion`, in order."""
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: JSON, finish_reason: str | None = None) -> JSON:
        body: JSON = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "system_fingerprint": "scripted",
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        if include_usage:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(message.get("content") or ""):
        yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls", [])):
        head = {"name": call["function"]["name"], "arguments": ""}
        yield chunk(
            {
                "tool_calls": [
                    {"index": index, "id": call["id"], "type": "function", "function": head}
                ]
            }
        )
        for piece in _pieces(call["function"]["arguments"], 64):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = completion["usage"]
        yield last


def sse(data: JSON | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> JSON:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def fault_headers(fault: Fault) -> dict[str, str]:
    headers = {}
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["Retry-After"] = value if isinstance(value, str) else f"{value:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    return headers


def models_body(models: list[str]) -> JSON:
    return {
        "object": "list",
        "data": [model_body(m) for m in models],
    }


def model_body(model: str) -> JSON:
    return {"id": model, "object": "model", "created": 0, "owned_by": "scripted"}
