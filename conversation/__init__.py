"""Conversation context: the seed's history, payload and rolling-summary rules.

The pure functions import nothing from storage, so `import conversation` stays
light (and safe inside Temporal's workflow sandbox); the database loader is
imported on first use.
"""

from typing import TYPE_CHECKING, Any

from conversation.context import (
    DEFAULT_ENTRY_MAX_LENGTH,
    DEFAULT_HISTORY_CHAR_LIMIT,
    DEFAULT_SUMMARY_MAX_LENGTH,
    TRUNCATION_MARKER,
    ConversationMessage,
    build_conversation_payload,
    collapse_whitespace,
    compute_rolling_conversation_summary,
    format_conversation_history,
    strip_tag_like,
)

if TYPE_CHECKING:
    from conversation.loading import ConversationContext, load_project_conversation_context

__all__ = [
    "DEFAULT_ENTRY_MAX_LENGTH",
    "DEFAULT_HISTORY_CHAR_LIMIT",
    "DEFAULT_SUMMARY_MAX_LENGTH",
    "TRUNCATION_MARKER",
    "ConversationContext",
    "ConversationMessage",
    "build_conversation_payload",
    "collapse_whitespace",
    "compute_rolling_conversation_summary",
    "format_conversation_history",
    "load_project_conversation_context",
    "strip_tag_like",
]

_LAZY = {"ConversationContext", "load_project_conversation_context"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from conversation import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'conversation' has no attribute {name!r}")
