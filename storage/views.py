"""The JSON shapes of messages, fragments and publications, shared by the API and the events
that carry them, so a message reads the same in `GET /api/projects/{id}` and in its event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from storage.images import AttachedImage
from storage.models import Fragment, Message, MessageRole
from storage.publications import PublicationRow


@dataclass(frozen=True)
class Prices:
    """Decimal currency units per million tokens; `usage.cost` appears when input and output
    prices are set. Cached prompt tokens cost the cached price (the input price when unset)."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached: Decimal | None = None

    @classmethod
    def of(cls, settings: Any) -> Prices:
        return cls(
            settings.qai_price_input_per_mtok,
            settings.qai_price_output_per_mtok,
            settings.qai_price_cached_per_mtok,
        )

    def cost(self, prompt: int, completion: int, cached: int) -> float | None:
        if self.input is None or self.output is None:
            return None
        cached_price = self.cached if self.cached is not None else self.input
        total = (
            Decimal(prompt - cached) * self.input
            + Decimal(cached) * cached_price
            + Decimal(completion) * self.output
        ) / Decimal(1_000_000)
        return float(round(total, 6))


def usage_view(
    prompt: int, completion: int, cached: int, calls: int, prices: Prices | None = None
) -> dict[str, Any]:
    """The `usage` object of a reply or a project; `cost` only when prices are set."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "total_tokens": prompt + completion,
        "model_calls": calls,
    }
    cost = prices.cost(prompt, completion, cached) if prices else None
    if cost is not None:
        usage["cost"] = cost
    return usage


def message_usage(message: Message, prices: Prices | None = None) -> dict[str, Any] | None:
    """An assistant message's usage over its run (None for a user message)."""
    if message.role != MessageRole.ASSISTANT:
        return None
    return usage_view(
        message.prompt_tokens or 0,
        message.completion_tokens or 0,
        message.cached_tokens or 0,
        message.model_calls or 0,
        prices,
    )


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


def message_view(
    message: Message, images: Sequence[AttachedImage] = (), *, prices: Prices | None = None
) -> dict[str, Any]:
    """A message as clients read it; its fragment must be loaded, its images given."""
    view = {
        "message_id": str(message.id),
        "role": message.role.value,
        "type": message.type.value,
        "content": message.content,
        "created_at": message.created_at.isoformat(),
        "reply_to_id": str(message.reply_to_id) if message.reply_to_id else None,
        "fragment": fragment_view(message.fragment) if message.fragment is not None else None,
        "images": [image_view(message.project_id, image) for image in images],
    }
    usage = message_usage(message, prices)
    if usage is not None:
        view["usage"] = usage
    return view


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
