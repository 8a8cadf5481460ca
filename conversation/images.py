"""Images in what the model reads: the current message's as content parts, earlier ones by name.

The transcript stores a reference (`qai-image:<sha256>`) where the image goes, never its bytes;
`with_image_data` builds the data URL from the stored bytes at call time. Building it is
deterministic (the same bytes, downscaled the same way), so a retried call sends exactly the
request its first attempt sent.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage import images
from storage.image_files import for_model
from storage.images import AttachedImage

REFERENCE = "qai-image:"
UPLOADS = "public/uploads"
_CACHE_SIZE = 16
_data_urls: dict[str, str] = {}
"""Data URLs built lately, by image id: every iteration of a run sends the same images, and
the same bytes always give the same URL, so a cached one is exactly what a rebuild gives."""


@dataclass(frozen=True)
class NamedImages:
    """An earlier message whose text ends with its images' names (they are not sent again)."""

    id: Any
    role: Any
    content: str


def name_images(
    messages: Sequence[Any], attached: Mapping[Any, Sequence[AttachedImage]]
) -> list[Any]:
    """The messages, each with `[image: mock.png, 1280×800]` after its text for its images."""
    named: list[Any] = []
    for message in messages:
        labels = [image.label() for image in attached.get(message.id, ())]
        if not labels:
            named.append(message)
            continue
        content = f"{message.content} {' '.join(labels)}"
        named.append(NamedImages(id=message.id, role=message.role, content=content))
    return named


def uploads_note(attached: Sequence[AttachedImage]) -> str:
    """Tells the model the images are shown, and where the app finds them."""
    lines = [
        f"<attached_images>\nThe user attached {len(attached)} image"
        f"{'s' if len(attached) != 1 else ''}, shown below. Each is also in the project, "
        f"under {UPLOADS}/, and the app reaches it at /uploads/<name> "
        '(for example <img src="/uploads/logo.png">):'
    ]
    for image in attached:
        where = image.upload_name or image.name
        lines.append(
            f"- {image.name} ({image.width}×{image.height}): {UPLOADS}/{where}, "
            f"served at /uploads/{where}"
        )
    lines.append("</attached_images>")
    return "\n".join(lines)


def user_content(payload: str, attached: Sequence[AttachedImage]) -> str | list[dict[str, Any]]:
    """The user entry of the transcript: text alone, or text then one reference per image."""
    if not attached:
        return payload
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": f"{payload}\n\n{uploads_note(attached)}"}
    ]
    for image in attached:
        parts.append({"type": "image_url", "image_url": {"url": f"{REFERENCE}{image.image_id}"}})
    return parts


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(_references(message) for message in messages)


def _references(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [
        part["image_url"]["url"][len(REFERENCE) :]
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "image_url"
        and str(part.get("image_url", {}).get("url", "")).startswith(REFERENCE)
    ]


class ImageMissing(LookupError):
    """A referenced image is no longer stored (its project was deleted)."""


async def with_image_data(
    session: AsyncSession, messages: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The messages as the model gets them: each reference becomes a base64 data URL of the
    image downscaled to at most 1568 px on its longest side (the first frame of a GIF)."""
    urls: dict[str, str] = {}
    for message in messages:
        for image_id in _references(message):
            if image_id not in urls:
                urls[image_id] = await _data_url(session, image_id)
    if not urls:
        return [dict(message) for message in messages]
    expanded = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [_expanded(part, urls) for part in content]
        expanded.append({**message, "content": content})
    return expanded


async def _data_url(session: AsyncSession, image_id: str) -> str:
    cached = _data_urls.get(image_id)
    if cached is not None:
        return cached
    row = await images.image_bytes(session, image_id)
    if row is None:
        raise ImageMissing(image_id)
    # Decoding and resizing a large image takes a while: off the event loop.
    data, content_type, _, _ = await asyncio.to_thread(for_model, row.data, row.content_type)
    url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    if len(_data_urls) >= _CACHE_SIZE:
        _data_urls.pop(next(iter(_data_urls)))
    _data_urls[image_id] = url
    return url


def _expanded(part: Any, urls: Mapping[str, str]) -> Any:
    if not (isinstance(part, dict) and part.get("type") == "image_url"):
        return part
    url = str(part.get("image_url", {}).get("url", ""))
    if not url.startswith(REFERENCE):
        return part
    return {"type": "image_url", "image_url": {"url": urls[url[len(REFERENCE) :]]}}
