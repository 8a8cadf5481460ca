"""The seed's conversation context rules, as pure functions.

These decide what the agent sees of earlier turns: a bounded history of recent
messages and a rolling summary kept on the project. They import nothing from
storage, so they work on any message-shaped objects (tests use plain ones).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

DEFAULT_HISTORY_CHAR_LIMIT = 6000
DEFAULT_SUMMARY_MAX_LENGTH = 2000
DEFAULT_ENTRY_MAX_LENGTH = 400
TRUNCATION_MARKER = "[Earlier conversation truncated]"

_WHITESPACE = re.compile(r"\s+")
_TAG_LIKE = re.compile(r"<[^>]+>")


class ConversationMessage(Protocol):
    """Anything with an id, a role equal to "USER"/"ASSISTANT", and text content."""

    @property
    def id(self) -> Any: ...

    @property
    def role(self) -> Any: ...

    @property
    def content(self) -> str: ...


def collapse_whitespace(text: str) -> str:
    """Every run of whitespace becomes one space; the ends are trimmed."""
    return _WHITESPACE.sub(" ", text).strip()


def strip_tag_like(text: str) -> str:
    """Replace every `<...>` (XML-like tags such as <task_summary>) by a space."""
    return _TAG_LIKE.sub(" ", text)


def _speaker(role: Any) -> str:
    if role == "USER":
        return "User"
    if role == "ASSISTANT":
        return "Assistant"
    raise ValueError(f"message role must be USER or ASSISTANT, got {role!r}")


def format_conversation_history(
    messages: Sequence[ConversationMessage], char_limit: int = DEFAULT_HISTORY_CHAR_LIMIT
) -> str:
    """Render the newest messages (oldest first in `messages`) within `char_limit`.

    Each entry costs its length + 1; the newest entry is always kept, even alone
    over the limit. A marker line comes first when anything was dropped.
    """
    entries = [f"{_speaker(m.role)}: {collapse_whitespace(m.content)}" for m in messages]
    kept: list[str] = []
    total = 0
    for entry in reversed(entries):
        cost = len(entry) + 1
        if kept and total + cost > char_limit:
            break
        kept.append(entry)
        total += cost
    kept.reverse()
    if len(kept) < len(entries):
        kept.insert(0, TRUNCATION_MARKER)
    return "\n".join(kept)


def build_conversation_payload(
    project_summary: str | None,
    messages: Sequence[ConversationMessage],
    latest_user_message: ConversationMessage | None,
    user_input: str,
    history_char_limit: int = DEFAULT_HISTORY_CHAR_LIMIT,
) -> str:
    """The agent's user prompt: summary, history without the current request, and the request."""
    history_messages = (
        [m for m in messages if m.id != latest_user_message.id]
        if latest_user_message is not None
        else list(messages)
    )
    history = format_conversation_history(history_messages, history_char_limit)

    sections: list[str] = []
    if project_summary and project_summary.strip():
        sections.append(
            f"<conversation_summary>\n{project_summary.strip()}\n</conversation_summary>"
        )
    if history:
        sections.append(f"<conversation_history>\n{history}\n</conversation_history>")
    sections.append(f"<user_request>\n{user_input}\n</user_request>")
    return "\n\n".join(sections)


def compute_rolling_conversation_summary(
    previous_summary: str | None,
    user_message: str,
    assistant_message: str,
    max_length: int = DEFAULT_SUMMARY_MAX_LENGTH,
    entry_max_length: int = DEFAULT_ENTRY_MAX_LENGTH,
) -> str:
    """Append one exchange to the project's summary, keeping roughly the last `max_length` chars.

    When cut, the partial first line is dropped and the marker line is prefixed,
    so the result is at most `max_length + len(TRUNCATION_MARKER) + 1` long.
    """
    user = collapse_whitespace(user_message)[:entry_max_length]
    assistant = collapse_whitespace(strip_tag_like(assistant_message))[:entry_max_length]
    new_entry = f"User: {user}\nAssistant: {assistant}"

    parts = [part for part in ((previous_summary or "").strip(), new_entry) if part]
    combined = "\n".join(parts)
    if len(combined) <= max_length:
        return combined

    truncated = combined[len(combined) - max_length :]
    line_break = truncated.find("\n")
    if line_break >= 0:
        truncated = truncated[line_break + 1 :]
    return f"{TRUNCATION_MARKER}\n{truncated.lstrip()}"
