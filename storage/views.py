"""The JSON shapes of messages and fragments, shared by the API and the events that carry them,
so a message reads the same in `GET /api/projects/{id}` and in its `message` event."""

from __future__ import annotations

from typing import Any

from storage.models import Fragment, Message


def screenshot_url(fragment: Fragment) -> str | None:
    """Where the version's screenshot is served; None when it has none."""
    if fragment.screenshot_id is None:
        return None
    return f"/api/fragments/{fragment.id}/screenshot"


def fragment_view(fragment: Fragment) -> dict[str, Any]:
    """A fragment without file contents: the paths only."""
    return {
        "fragment_id": str(fragment.id),
        "title": fragment.title,
        "summary": fragment.summary,
        "preview_url": fragment.sandbox_url or None,
        "paths": sorted(fragment.files),
        "checks": fragment.checks,
        "screenshot_url": screenshot_url(fragment),
    }


def message_view(message: Message) -> dict[str, Any]:
    """A message as clients read it; its fragment must be loaded."""
    return {
        "message_id": str(message.id),
        "role": message.role.value,
        "type": message.type.value,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "reply_to_id": str(message.reply_to_id) if message.reply_to_id else None,
        "fragment": fragment_view(message.fragment) if message.fragment is not None else None,
    }
