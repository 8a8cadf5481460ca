"""Publications: production builds of a project's versions, and the one its public URL serves.

One row per build. Its output is in the blob store under `blob_prefix(...)`; the row holds
ids and counts only. The newest `live` row is served; when a newer build goes live the earlier
one becomes `superseded`, and builds past the newest few are removed with their blobs.
A failed build leaves the live one served. Unpublishing removes the rows and their blobs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel


class PublicationStatus(StrEnum):
    BUILDING = "building"
    LIVE = "live"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class PublicationMode(StrEnum):
    STATIC = "static"
    SERVER = "server"


class PublicationRow(SQLModel, table=True):
    __tablename__ = "publications"
    __table_args__ = (
        sa.CheckConstraint("status IN ('building', 'live', 'failed', 'superseded')", name="status"),
        sa.Index("ix_publications_project_id_created_at", "project_id", "created_at"),
    )

    id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, primary_key=True))
    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        )
    )
    fragment_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("fragments.id", ondelete="CASCADE"), nullable=False
        )
    )
    status: str = Field(sa_type=sa.Text)
    mode: str | None = Field(default=None, sa_type=sa.Text)
    error: str | None = Field(default=None, sa_type=sa.Text)
    files: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    bytes: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    build_seconds: float | None = Field(default=None, sa_type=sa.Float)
    created_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        ),
    )
    published_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )


def blob_prefix(project_id: uuid.UUID, publication_id: uuid.UUID) -> str:
    """Where a build's files are in the blob store (each file under its URL path)."""
    return f"publications/{project_id}/{publication_id}/"


def project_prefix(project_id: uuid.UUID) -> str:
    return f"publications/{project_id}/"


async def get(session: AsyncSession, publication_id: uuid.UUID) -> PublicationRow | None:
    return await session.get(PublicationRow, publication_id, populate_existing=True)


async def start_building(
    session: AsyncSession,
    *,
    publication_id: uuid.UUID,
    project_id: uuid.UUID,
    fragment_id: uuid.UUID,
) -> PublicationRow:
    """The `building` row, once (a retried activity finds it)."""
    row = await get(session, publication_id)
    if row is None:
        row = PublicationRow(
            id=publication_id,
            project_id=project_id,
            fragment_id=fragment_id,
            status=PublicationStatus.BUILDING,
        )
        session.add(row)
        await session.commit()
    return row


async def fail(session: AsyncSession, publication_id: uuid.UUID, error: str) -> None:
    await session.execute(
        sa.update(PublicationRow)
        .where(PublicationRow.id == publication_id, PublicationRow.status != "live")
        .values(status=PublicationStatus.FAILED, error=error)
    )
    await session.commit()


async def go_live(
    session: AsyncSession,
    *,
    publication_id: uuid.UUID,
    project_id: uuid.UUID,
    mode: PublicationMode,
    files: int,
    size: int,
    build_seconds: float,
    keep: int,
) -> list[uuid.UUID]:
    """Make the build the served one; returns the builds past the newest `keep` (to remove)."""
    await session.execute(
        sa.select(PublicationRow.id)
        .where(PublicationRow.project_id == project_id)
        .with_for_update()
    )
    await session.execute(
        sa.update(PublicationRow)
        .where(
            PublicationRow.project_id == project_id,
            PublicationRow.status == PublicationStatus.LIVE,
            PublicationRow.id != publication_id,
        )
        .values(status=PublicationStatus.SUPERSEDED)
    )
    await session.execute(
        sa.update(PublicationRow)
        .where(PublicationRow.id == publication_id)
        .values(
            status=PublicationStatus.LIVE,
            mode=mode,
            files=files,
            bytes=size,
            build_seconds=build_seconds,
            error=None,
            published_at=sa.func.clock_timestamp(),
        )
    )
    built = (
        await session.scalars(
            sa.select(PublicationRow.id)
            .where(
                PublicationRow.project_id == project_id,
                PublicationRow.status.in_([PublicationStatus.LIVE, PublicationStatus.SUPERSEDED]),
            )
            .order_by(PublicationRow.published_at.desc(), PublicationRow.created_at.desc())
        )
    ).all()
    old = list(built[keep:])
    if old:
        await session.execute(sa.delete(PublicationRow).where(PublicationRow.id.in_(old)))
    await session.commit()
    return old


async def latest(session: AsyncSession, project_id: uuid.UUID) -> PublicationRow | None:
    """The newest attempt (what the API shows: building, live or failed)."""
    return (
        await session.scalars(
            sa.select(PublicationRow)
            .where(
                PublicationRow.project_id == project_id,
                PublicationRow.status != PublicationStatus.SUPERSEDED,
            )
            .order_by(PublicationRow.created_at.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()


async def served(session: AsyncSession, project_id: uuid.UUID) -> PublicationRow | None:
    """The build the public URL serves, if any."""
    return (
        await session.scalars(
            sa.select(PublicationRow)
            .where(
                PublicationRow.project_id == project_id,
                PublicationRow.status == PublicationStatus.LIVE,
            )
            .order_by(PublicationRow.published_at.desc())
            .limit(1)
        )
    ).one_or_none()


async def remove_all(session: AsyncSession, project_id: uuid.UUID) -> list[uuid.UUID]:
    """Unpublish: every row goes; returns their ids (their blobs are removed after)."""
    ids = (
        await session.scalars(
            sa.delete(PublicationRow)
            .where(PublicationRow.project_id == project_id)
            .returning(PublicationRow.id)
        )
    ).all()
    await session.commit()
    return list(ids)


async def count_live_by_mode(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        sa.select(PublicationRow.mode, sa.func.count())
        .where(PublicationRow.status == PublicationStatus.LIVE)
        .group_by(PublicationRow.mode)
    )
    return {mode or "": count for mode, count in rows.all()}
