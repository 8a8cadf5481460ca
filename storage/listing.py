"""Reading projects for the API: a page of the project list, and one project's usage.

The list is paged by keyset (created_at, id), newest first, so a page costs the same however
deep it is, and each row carries its last message and latest preview from LATERAL subqueries.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Message

_PAGE = sa.text(
    """
    SELECT p.id, p.name, p.created_at, p.updated_at,
           lm.role, lm.type, lm.content, lm.created_at AS message_at, lf.sandbox_url,
           lf.title AS latest_title, ls.id AS screenshot_fragment_id
    FROM projects p
    LEFT JOIN LATERAL (
        SELECT m.role, m.type, m.content, m.created_at FROM messages m
        WHERE m.project_id = p.id ORDER BY m.created_at DESC, m.seq DESC LIMIT 1
    ) lm ON true
    LEFT JOIN LATERAL (
        SELECT f.sandbox_url, f.title FROM messages m JOIN fragments f ON f.message_id = m.id
        WHERE m.project_id = p.id ORDER BY m.created_at DESC, m.seq DESC LIMIT 1
    ) lf ON true
    LEFT JOIN LATERAL (
        SELECT f.id FROM messages m JOIN fragments f ON f.message_id = m.id
        WHERE m.project_id = p.id AND f.screenshot_id IS NOT NULL
        ORDER BY m.created_at DESC, m.seq DESC LIMIT 1
    ) ls ON true
    WHERE CAST(:after_at AS timestamptz) IS NULL
       OR (p.created_at, p.id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT :limit
    """
)


class BadCursor(ValueError):
    """A cursor this API did not hand out."""


@dataclass(frozen=True)
class LastMessage:
    role: str
    type: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class ProjectRow:
    project_id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime
    preview_url: str | None
    last_message: LastMessage | None
    latest_title: str | None = None
    """The latest version's title (the model's name for the app)."""
    screenshot_fragment_id: uuid.UUID | None = None
    """The latest version that has a screenshot."""


def encode_cursor(row: ProjectRow) -> str:
    raw = f"{row.created_at.isoformat()}|{row.project_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, project_id = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(project_id)
    except (ValueError, UnicodeDecodeError):
        raise BadCursor(
            "the cursor is not one this API gave out; start from the first page"
        ) from None


async def page(
    session: AsyncSession, *, limit: int, cursor: str | None = None
) -> tuple[list[ProjectRow], str | None]:
    """Up to `limit` projects after `cursor`, newest first, and the cursor of the next page."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    result = await session.execute(
        _PAGE, {"after_at": after_at, "after_id": after_id, "limit": limit + 1}
    )
    rows = [
        ProjectRow(
            project_id=r.id,
            name=r.name,
            created_at=r.created_at,
            updated_at=r.updated_at,
            preview_url=r.sandbox_url or None,
            last_message=LastMessage(r.role, r.type, r.content, r.message_at)
            if r.role is not None
            else None,
            latest_title=r.latest_title,
            screenshot_fragment_id=r.screenshot_fragment_id,
        )
        for r in result
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None


async def usage(session: AsyncSession, project_id: uuid.UUID) -> tuple[int, int, int, int]:
    """Prompt, completion and cached tokens and model calls over the project's saved replies."""
    row = (
        await session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(Message.prompt_tokens), 0),
                sa.func.coalesce(sa.func.sum(Message.completion_tokens), 0),
                sa.func.coalesce(sa.func.sum(Message.cached_tokens), 0),
                sa.func.coalesce(sa.func.sum(Message.model_calls), 0),
            ).where(Message.project_id == project_id)
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])
