"""The script format the scripted model replays, validated at load time.

A bad script fails when it is loaded, with the path of the bad field, never in
the middle of a test run. The format is documented in scripted_llm/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# Statuses a fault may return, with the OpenAI error `type` each one carries.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    408: "timeout",
    409: "conflict",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ScriptError(ValueError):
    """A script file that cannot be used; the message names the file and the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolCall(_Strict):
    """One function call in an assistant turn.

    `arguments` is an object (sent as its JSON text) or a string sent verbatim, so a
    script can also send any raw text, valid JSON or not.
    """

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None
    """Sent as given; "" or an id repeated across calls scripts a model with broken ids."""

    def arguments_text(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class Fault(_Strict):
    """What one attempt of a turn does instead of (or before) answering normally."""

    status: int | None = Field(default=None, ge=400, le=599)
    message: str | None = None
    code: str | None = None
    type: str | None = None
    retry_after: float | str | None = None
    retry_after_ms: int | None = Field(default=None, ge=0)
    delay: float = Field(default=0.0, ge=0)
    malformed_arguments: bool = False

    @model_validator(mode="after")
    def _one_effect(self) -> Fault:
        error_fields = (self.message, self.code, self.type, self.retry_after, self.retry_after_ms)
        if self.status is None and any(v is not None for v in error_fields):
            raise ValueError(
                "`message`, `code`, `type`, `retry_after` and `retry_after_ms` need `status`"
            )
        if self.status is None and self.delay == 0 and not self.malformed_arguments:
            raise ValueError("a fault needs `status`, `delay` or `malformed_arguments`")
        if self.status is not None and self.malformed_arguments:
            raise ValueError("`status` and `malformed_arguments` cannot be combined")
        return self

    def error_type(self) -> str:
        assert self.status is not None
        if self.type:
            return self.type
        return _ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "api_error")

    def error_message(self) -> str:
        if self.message:
            return self.message
        if self.code == "context_length_exceeded":
            return (
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 131072 tokens. Please reduce the length of the messages."
            )
        defaults = {
            400: "Invalid request (scripted fault).",
            401: "Incorrect API key provided (scripted fault).",
            403: "You are not allowed to use this model (scripted fault).",
            404: "The model does not exist or you do not have access to it (scripted fault).",
            408: "Request timed out (scripted fault).",
            409: "Conflict (scripted fault).",
            429: "Rate limit reached (scripted fault). Please try again later.",
        }
        assert self.status is not None
        return defaults.get(self.status, f"The server had an error (scripted fault {self.status}).")

    def describe(self) -> str:
        parts = []
        if self.delay:
            parts.append(f"delay {self.delay:g}s")
        if self.status is not None:
            parts.append(f"status {self.status}" + (f" {self.code}" if self.code else ""))
        if self.malformed_arguments:
            parts.append("malformed arguments")
        return ", ".join(parts)


class Usage(_Strict):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cached_tokens: int | None = Field(default=None, ge=0)


class Turn(_Strict):
    """One assistant reply: text, tool calls, or both."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    delay: float = Field(default=0.0, ge=0)
    usage: Usage | None = None
    finish_reason: Literal["stop", "tool_calls", "length", "content_filter"] | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Turn:
        if self.content is None and not self.tool_calls:
            raise ValueError("a turn needs `content` or `tool_calls`")
        if not self.tool_calls and any(f.malformed_arguments for f in self.faults):
            raise ValueError("`malformed_arguments` needs a turn with `tool_calls`")
        return self


class Conversation(_Strict):
    """The turns replayed for every request whose first user message contains `match`."""

    name: str | None = Field(default=None, min_length=1)
    match: str | None = Field(default=None, min_length=1)
    title: str | None = Field(default=None, min_length=1)
    title_faults: list[Fault] = Field(default_factory=list)
    turns: list[Turn] = Field(min_length=1)
    after_last: Literal["repeat", "error"] = "repeat"

    @model_validator(mode="after")
    def _no_malformed_title(self) -> Conversation:
        if any(f.malformed_arguments for f in self.title_faults):
            raise ValueError("`title_faults` cannot use `malformed_arguments`")
        return self


class Script(_Strict):
    """A whole script: conversations tried in order, then `default`."""

    conversations: list[Conversation] = Field(default_factory=list)
    default: Conversation | None = None
    title: str = Field(default="Scripted app", min_length=1)
    title_faults: list[Fault] = Field(default_factory=list)
    models: list[str] = Field(default_factory=lambda: ["scripted"], min_length=1)
    delay: float = Field(default=0.0, ge=0)
    require_api_key: str | None = Field(default=None, min_length=1)
    text_only_models: list[str] = Field(default_factory=list)
    """Models that refuse image parts with a 400, as a provider's text-only models do."""
    context_tokens: int | None = Field(default=None, ge=1)
    """The model's context window: a request whose prompt plus `max_tokens` exceeds it gets a
    real provider's 400 `context_length_exceeded`."""

    @field_validator("conversations")
    @classmethod
    def _need_match(cls, conversations: list[Conversation]) -> list[Conversation]:
        for index, conversation in enumerate(conversations):
            if conversation.match is None:
                raise ValueError(f"conversation {index} needs `match` (or move it to `default`)")
        return conversations

    @model_validator(mode="after")
    def _usable(self) -> Script:
        if not self.conversations and self.default is None:
            raise ValueError("a script needs `conversations` or a `default` conversation")
        names = [name for name, _ in self.named_conversations()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"conversation names must be unique; repeated: {duplicates}")
        return self

    def named_conversations(self) -> list[tuple[str, Conversation]]:
        """Each conversation with the name used in logs and counters."""
        named = [
            (c.name or c.match or f"conversation-{i}", c) for i, c in enumerate(self.conversations)
        ]
        if self.default is not None:
            named.append((self.default.name or "default", self.default))
        return named


def _resolve_files(value: Any, base_dir: Path | None, where: str) -> Any:
    """Replace every `{"$file": "relative/path"}` with the text of that file."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            relative = value["$file"]
            if not isinstance(relative, str) or not relative:
                raise ScriptError(f"{where}: `$file` must be a non-empty relative path")
            if base_dir is None:
                raise ScriptError(f"{where}: `$file` needs a script loaded from a file or base_dir")
            path = (base_dir / relative).resolve()
            try:
                return path.read_text(encoding="utf-8")
            except OSError as error:
                raise ScriptError(f"{where}: cannot read $file {relative!r}: {error}") from None
        return {k: _resolve_files(v, base_dir, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_files(v, base_dir, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid script {source}:"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def load_script(
    source: Path | str | dict[str, Any] | Script, base_dir: Path | None = None
) -> Script:
    """Read and validate a script from a JSON file, a dict or an existing Script.

    `$file` references resolve against the script file's directory (or `base_dir`).
    Raises ScriptError naming the bad field.
    """
    if isinstance(source, Script):
        return source
    if isinstance(source, dict):
        name = "<dict>"
        data: Any = source
    else:
        path = Path(source)
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ScriptError(f"cannot read script {name}: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ScriptError(
                f"invalid script {name}: not JSON (line {error.lineno}, column {error.colno}: "
                f"{error.msg})"
            ) from None
        base_dir = base_dir or path.parent
    if not isinstance(data, dict):
        raise ScriptError(f"invalid script {name}: the top level must be a JSON object")
    data = _resolve_files(data, base_dir, "script")
    try:
        return Script.model_validate(data)
    except ValidationError as error:
        raise ScriptError(_describe(error, name)) from None
