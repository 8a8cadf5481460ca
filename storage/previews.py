"""Where each project's preview lives: its sandbox, the host holding it, and when it was seen.

One row per project. Activities write it whenever a run or a revival gets the project a sandbox,
and when a quiet sandbox hibernates; the preview gateway reads it on every new connection and
records traffic, so any host's gateway can find the sandbox, and an idle one can be stopped.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.models import Project


class PreviewState(StrEnum):
    LIVE = "live"
    HIBERNATED = "hibernated"


class PreviewRow(SQLModel, table=True):
    __tablename__ = "previews"

    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
        )
    )
    sandbox_id: str = Field(sa_type=sa.Text)
    host_id: str = Field(sa_type=sa.Text)
    """The worker host that holds the sandbox (local sandboxes live on one host)."""
    host_address: str = Field(sa_type=sa.Text)
    """host:port of that host's gateway, for gateways on other hosts to forward to."""
    target: str = Field(sa_type=sa.Text)
    """The sandbox's own preview address, as its host reaches it (`http://127.0.0.1:port`)."""
    state: str = Field(sa_type=sa.Text)
    updated_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        )
    )
    last_request_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True)
    )


async def record_live(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    sandbox_id: str,
    host_id: str,
    host_address: str,
    target: str,
) -> None:
    """The project's preview is now this sandbox (idempotent: a retry writes the same row).

    Nothing is written for a project that no longer exists (deleted while its sandbox started).
    """
    values = {
        "project_id": project_id,
        "sandbox_id": sandbox_id,
        "host_id": host_id,
        "host_address": host_address,
        "target": target,
        "state": PreviewState.LIVE.value,
    }
    columns = list(values)
    source = sa.select(
        *(
            sa.literal(value, type_=PreviewRow.__table__.c[key].type)
            for key, value in values.items()
        )
    ).where(sa.exists().where(Project.id == project_id))
    statement = insert(PreviewRow).from_select(columns, source)
    changed = {key: statement.excluded[key] for key in columns if key != "project_id"}
    statement = statement.on_conflict_do_update(
        index_elements=[PreviewRow.project_id],
        set_={**changed, "updated_at": sa.func.clock_timestamp()},
    )
    await session.execute(statement)


async def get(session: AsyncSession, project_id: uuid.UUID) -> PreviewRow | None:
    return await session.get(PreviewRow, project_id, populate_existing=True)


async def touch(session: AsyncSession, project_ids: list[uuid.UUID]) -> None:
    """Previews were requested just now."""
    await session.execute(
        sa.update(PreviewRow)
        .where(PreviewRow.project_id.in_(project_ids))  # type: ignore[union-attr]
        .values(last_request_at=sa.func.clock_timestamp())
    )


async def quiet_seconds(session: AsyncSession, project_id: uuid.UUID) -> float | None:
    """Seconds since the preview was last requested or made live (None: no preview row)."""
    seconds = sa.func.extract(
        "epoch",
        sa.func.clock_timestamp()
        - sa.func.greatest(PreviewRow.updated_at, PreviewRow.last_request_at),
    )
    query = sa.select(seconds).where(PreviewRow.project_id == project_id)
    value = (await session.execute(query)).scalar_one_or_none()
    return float(value) if value is not None else None


async def mark_hibernated(session: AsyncSession, project_id: uuid.UUID, sandbox_id: str) -> bool:
    """The sandbox was stopped for idleness; only if it is still the project's preview."""
    result = await session.execute(
        sa.update(PreviewRow)
        .where(PreviewRow.project_id == project_id, PreviewRow.sandbox_id == sandbox_id)
        .values(state=PreviewState.HIBERNATED.value, updated_at=sa.func.clock_timestamp())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def count_by_state(session: AsyncSession, host_id: str) -> dict[str, int]:
    """Previews of this host by state (for operators and metrics)."""
    query = (
        sa.select(PreviewRow.state, sa.func.count())
        .where(PreviewRow.host_id == host_id)
        .group_by(PreviewRow.state)
    )
    return {state: count for state, count in (await session.execute(query)).all()}
