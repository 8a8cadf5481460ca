"""The JSON shapes of messages, fragments and publications, shared by the API and the events
that carry them, so a message reads the same in `GET /api/projects/{id}` and in its event."""

from __future__ import annotations

from typing import Any

from storage.models import Fragment, Message
from storage.publications import PublicationRow


def fragment_view(fragment: Fragment) -> dict[str, Any]:
    """A fragment without file contents: the paths only."""
    return {
        "fragment_id": str(fragment.id),
        "title": fragment.title,
        "summary": fragment.summary,
        "preview_url": fragment.sandbox_url or None,
        "paths": sorted(fragment.files),
        "checks": fragment.checks,
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


def publication_view(
    latest: PublicationRow | None, served: PublicationRow | None, url: str
) -> dict[str, Any] | None:
    """The project's publication: its newest attempt, and the build its URL serves now.

    A failed attempt shows `failed` with its error while `live_fragment_id` (the earlier
    build, still served) says what visitors get.
    """
    if latest is None:
        return None
    shown = served if latest.status == "live" else latest
    return {
        "status": latest.status,
        "url": url,
        "fragment_id": str(latest.fragment_id),
        "mode": (served or latest).mode,
        "error": latest.error,
        "published_at": served.published_at.isoformat() if served and served.published_at else None,
        "live_fragment_id": str(served.fragment_id) if served else None,
        "publication_id": str(shown.id),
    }
