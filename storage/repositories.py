"""Each project's git history as a bundle: the durable copy of the repository `repos.history`
builds from the versions, so its commits (and their hashes) outlive the cache on disk and a
change of template. Rebuilding from the snapshots remains the fallback."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel


class RepositoryRow(SQLModel, table=True):
    __tablename__ = "project_repositories"

    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
        )
    )
    bundle: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    """`git bundle create` of `main`: every commit of the project's history."""
    versions: list[Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    """[[message id, commit], ...] oldest first: which version each commit is."""
    updated_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        )
    )


async def get(session: AsyncSession, project_id: uuid.UUID) -> RepositoryRow | None:
    return await session.get(RepositoryRow, project_id, populate_existing=True)


async def save(
    session: AsyncSession, project_id: uuid.UUID, bundle: bytes, versions: list[list[str]]
) -> None:
    """Replace the project's bundle (the caller commits; a project deleted meanwhile makes the
    foreign key refuse it with IntegrityError)."""
    values = {"project_id": project_id, "bundle": bundle, "versions": versions}
    statement = insert(RepositoryRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[RepositoryRow.project_id],
        set_={
            "bundle": statement.excluded.bundle,
            "versions": statement.excluded.versions,
            "updated_at": sa.func.clock_timestamp(),
        },
    )
    await session.execute(statement)
