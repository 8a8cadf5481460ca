"""The JSON shapes of messages and fragments, shared by the API and the events that carry them,
so a message reads the same in `GET /api/projects/{id}` and in its `message` event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.images import AttachedImage
from storage.models import Fragment, Message


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


def image_url(project_id: object, image_id: str) -> str:
    return f"/api/projects/{project_id}/images/{image_id}"


def image_view(project_id: object, image: AttachedImage) -> dict[str, Any]:
    return {
        "id": image.image_id,
        "url": image_url(project_id, image.image_id),
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "name": image.name,
    }


def message_view(message: Message, images: Sequence[AttachedImage] = ()) -> dict[str, Any]:
    """A message as clients read it; its fragment must be loaded, its images given."""
    return {
        "message_id": str(message.id),
        "role": message.role.value,
        "type": message.type.value,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "reply_to_id": str(message.reply_to_id) if message.reply_to_id else None,
        "fragment": fragment_view(message.fragment) if message.fragment is not None else None,
        "images": [image_view(message.project_id, image) for image in images],
    }
