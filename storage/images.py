"""Images attached to messages: stored once by content, referenced by each message using them.

The client that submits a message stores its images (checked and cleaned by
`storage.image_files`) and their references under the message id it chose, before it signals
the project's workflow; the workflow then writes the message row and gives each image its
name in the workspace (`public/uploads/<name>`, unique within the project). History carries
the ids only. A reference names its project, so deleting a project deletes the images no
other project references.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.image_files import CheckedImage, workspace_name
from storage.models import Project


def _now() -> datetime:
    return datetime.now(UTC)


class ImageRow(SQLModel, table=True):
    __tablename__ = "images"

    id: str = Field(primary_key=True, sa_type=sa.Text)
    """The sha256 of `data` (hex)."""
    content_type: str = Field(sa_type=sa.Text)
    width: int
    height: int
    size: int
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = Field(
        default_factory=_now, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )


class MessageImage(SQLModel, table=True):
    __tablename__ = "message_images"
    __table_args__ = (
        sa.Index("uq_message_images_upload_name", "project_id", "upload_name", unique=True),
    )

    message_id: uuid.UUID = Field(primary_key=True)
    """No foreign key: the reference is written before the workflow writes the message."""
    position: int = Field(primary_key=True)
    project_id: uuid.UUID = Field(index=True)
    image_id: str = Field(
        sa_column=sa.Column(sa.Text, sa.ForeignKey("images.id"), nullable=False, index=True)
    )
    name: str = Field(sa_type=sa.Text)
    """The file name the user gave."""
    upload_name: str | None = Field(default=None, sa_type=sa.Text)
    """Its name under public/uploads/, set when the message is recorded."""
    created_at: datetime = Field(
        default_factory=_now, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )


@dataclass(frozen=True)
class AttachedImage:
    """One image of one message, as views, the conversation and the workspace need it."""

    message_id: uuid.UUID
    position: int
    image_id: str
    name: str
    upload_name: str | None
    content_type: str
    width: int
    height: int

    def label(self) -> str:
        """How the conversation history names it: `[image: mock.png, 1280×800]`."""
        return f"[image: {self.name}, {self.width}×{self.height}]"


async def store_for_message(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    message_id: uuid.UUID,
    images: Sequence[CheckedImage],
) -> list[str]:
    """Store the images (once per content) and the message's references; commits.

    Idempotent: a resubmission of the same message id stores nothing new. Returns the ids.
    """
    for attempt in range(3):
        try:
            for image in images:
                await session.execute(
                    insert(ImageRow)
                    .values(
                        id=image.sha256,
                        content_type=image.content_type,
                        width=image.width,
                        height=image.height,
                        size=len(image.data),
                        data=image.data,
                        created_at=_now(),
                    )
                    .on_conflict_do_nothing(index_elements=[ImageRow.id])
                )
            for position, image in enumerate(images):
                await session.execute(
                    insert(MessageImage)
                    .values(
                        message_id=message_id,
                        position=position,
                        project_id=project_id,
                        image_id=image.sha256,
                        name=image.name,
                        created_at=_now(),
                    )
                    .on_conflict_do_nothing(
                        index_elements=[MessageImage.message_id, MessageImage.position]
                    )
                )
            await session.commit()
            break
        except IntegrityError:
            # A project deletion removed the same content between our two inserts: again.
            await session.rollback()
            if attempt == 2:
                raise
    return [image.sha256 for image in images]


async def discard_unrecorded(session: AsyncSession, message_id: uuid.UUID) -> None:
    """Undo `store_for_message` for a message that could not be submitted; commits."""
    result = await session.execute(
        sa.delete(MessageImage)
        .where(MessageImage.message_id == message_id)
        .returning(MessageImage.image_id)
    )
    await _delete_unreferenced(session, set(result.scalars()))
    await session.commit()


async def assign_upload_names(
    session: AsyncSession, project_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    """Give the message's images their workspace names, unique within the project, once.

    The project's row is locked first, so two messages never take the same name; commits.
    """
    rows = await _references(session, [message_id])
    if all(row.upload_name for row in rows):
        return
    await session.execute(sa.select(Project.id).where(Project.id == project_id).with_for_update())
    rows = await _references(session, [message_id])
    taken = set(
        (
            await session.execute(
                sa.select(MessageImage.upload_name).where(
                    MessageImage.project_id == project_id,
                    MessageImage.upload_name.is_not(None),
                )
            )
        ).scalars()
    )
    for row in rows:
        if row.upload_name:
            continue
        name = workspace_name(row.name, row.content_type, taken)
        taken.add(name)
        await session.execute(
            sa.update(MessageImage)
            .where(MessageImage.message_id == message_id, MessageImage.position == row.position)
            .values(upload_name=name)
        )
    await session.commit()


async def _references(
    session: AsyncSession, message_ids: Iterable[uuid.UUID]
) -> list[AttachedImage]:
    ids = list(message_ids)
    if not ids:
        return []
    query = (
        sa.select(MessageImage, ImageRow.content_type, ImageRow.width, ImageRow.height)
        .join(ImageRow, ImageRow.id == MessageImage.image_id)
        .where(MessageImage.message_id.in_(ids))
        .order_by(MessageImage.message_id, MessageImage.position)
    )
    return [
        AttachedImage(
            message_id=ref.message_id,
            position=ref.position,
            image_id=ref.image_id,
            name=ref.name,
            upload_name=ref.upload_name,
            content_type=content_type,
            width=width,
            height=height,
        )
        for ref, content_type, width, height in (await session.execute(query)).all()
    ]


async def for_messages(
    session: AsyncSession, message_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[AttachedImage]]:
    """Each message's images in the order they were attached (messages without: absent)."""
    attached: dict[uuid.UUID, list[AttachedImage]] = {}
    for image in await _references(session, message_ids):
        attached.setdefault(image.message_id, []).append(image)
    return attached


async def image_bytes(session: AsyncSession, image_id: str) -> ImageRow | None:
    return await session.get(ImageRow, image_id)


async def project_image(
    session: AsyncSession, project_id: uuid.UUID, image_id: str
) -> ImageRow | None:
    """The image, if a message of the project references it (else None)."""
    referenced = await session.scalar(
        sa.select(sa.literal(True))
        .where(MessageImage.project_id == project_id, MessageImage.image_id == image_id)
        .limit(1)
    )
    return await session.get(ImageRow, image_id) if referenced else None


async def delete_for_project(session: AsyncSession, project_id: uuid.UUID) -> int:
    """Remove the project's references and the images no other project references.

    Part of the caller's transaction (the project deletion); returns images deleted.
    """
    result = await session.execute(
        sa.delete(MessageImage)
        .where(MessageImage.project_id == project_id)
        .returning(MessageImage.image_id)
    )
    return await _delete_unreferenced(session, set(result.scalars()))


async def _delete_unreferenced(session: AsyncSession, image_ids: set[str]) -> int:
    if not image_ids:
        return 0
    still_used = sa.exists().where(MessageImage.image_id == ImageRow.id)
    result = await session.execute(
        sa.delete(ImageRow).where(ImageRow.id.in_(image_ids), ~still_used)
    )
    return int(result.rowcount or 0)


async def count_images(session: AsyncSession) -> int:
    """Stored images, for tests and the history-size benchmark."""
    return int(await session.scalar(sa.select(sa.func.count()).select_from(ImageRow)) or 0)
