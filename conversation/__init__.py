"""Conversation context: the seed's history, payload and rolling-summary rules.

`context` holds the pure rules; `loading` reads a project's conversation from storage.
"""

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
