"""Screenshots of versions: stored once per key, attached to fragments by id.

The image bytes live here (a few dozen KB each); workflow histories carry only the id.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Fragment, Screenshot


async def save(
    session: AsyncSession,
    *,
    key: str,
    project_id: uuid.UUID,
    data: bytes,
    media_type: str,
    width: int,
    height: int,
    fragment_message_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """The screenshot stored under `key` (a retry replaces the image, keeps the id); with
    `fragment_message_id`, that message's fragment shows it."""
    values = {
        "key": key,
        "project_id": project_id,
        "data": data,
        "media_type": media_type,
        "width": width,
        "height": height,
    }
    statement = (
        insert(Screenshot)
        .values(**values)
        .on_conflict_do_update(
            index_elements=[Screenshot.key],
            set_={"data": data, "media_type": media_type, "width": width, "height": height},
        )
        .returning(Screenshot.id)
    )
    screenshot_id = (await session.execute(statement)).scalar_one()
    if fragment_message_id is not None:
        await session.execute(
            sa.update(Fragment)
            .where(Fragment.message_id == fragment_message_id)
            .values(screenshot_id=screenshot_id)
        )
    return screenshot_id


async def get(session: AsyncSession, screenshot_id: uuid.UUID) -> Screenshot | None:
    return await session.get(Screenshot, screenshot_id)
