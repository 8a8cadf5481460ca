"""Workspace snapshots in PostgreSQL: one per run, replaced after each of its tool calls.

A run's snapshot is what its project had changed relative to the template after the run's last
completed tool call. A new sandbox gets the latest one back, whether it replaces a sandbox that
died mid-run or serves a follow-up after the old one expired.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from sandboxes.snapshot import WorkspaceSnapshot
from storage.models import Fragment, Message


class SnapshotRow(SQLModel, table=True):
    __tablename__ = "workspace_snapshots"

    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
        )
    )
    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    tool_call_id: str | None = Field(default=None, sa_type=sa.Text)
    """The last tool call whose changes it holds (None: taken outside a tool call)."""
    archive: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    files: int
    size: int
    """Bytes of file content before compression."""
    updated_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


async def save(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    run_id: uuid.UUID,
    snapshot: WorkspaceSnapshot,
    tool_call_id: str | None,
) -> None:
    """Replace the run's snapshot (the caller commits, with the tool result it belongs to)."""
    values = {
        "run_id": run_id,
        "project_id": project_id,
        "tool_call_id": tool_call_id,
        "archive": snapshot.to_archive(),
        "files": len(snapshot.files),
        "size": snapshot.size,
        "updated_at": datetime.now(UTC),
    }
    statement = insert(SnapshotRow).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[SnapshotRow.run_id],
        set_={key: statement.excluded[key] for key in values if key != "run_id"},
    )
    await session.execute(statement)


async def latest(
    session: AsyncSession,
    project_id: uuid.UUID,
    *,
    up_to_run: uuid.UUID | None = None,
    before: bool = False,
) -> WorkspaceSnapshot | None:
    """The project's newest snapshot: that of its latest run that has one.

    With `up_to_run`, runs of messages after that one are ignored (they are still queued);
    with `before` too, that run's own snapshot is ignored (what the run started from).
    """
    query = (
        sa.select(SnapshotRow.archive)
        .join(Message, Message.id == SnapshotRow.run_id)
        .where(SnapshotRow.project_id == project_id)
        .order_by(Message.created_at.desc(), Message.seq.desc())
        .limit(1)
    )
    if up_to_run is not None:
        anchor = sa.select(Message.created_at, Message.seq).where(Message.id == up_to_run).cte()
        position = sa.tuple_(Message.created_at, Message.seq)
        bound = sa.select(anchor.c.created_at, anchor.c.seq).scalar_subquery()
        query = query.where(position < bound if before else position <= bound)
    archive = (await session.execute(query)).scalar_one_or_none()
    return WorkspaceSnapshot.from_archive(archive) if archive is not None else None


async def workspace(
    session: AsyncSession, project_id: uuid.UUID, *, up_to_run: uuid.UUID | None = None
) -> WorkspaceSnapshot | None:
    """What a new sandbox of the project must get back: its latest snapshot (see `latest`),
    else, for a project whose versions predate snapshots, its latest fragment's files; None
    when the project has neither."""
    snapshot = await latest(session, project_id, up_to_run=up_to_run)
    if snapshot is not None:
        return snapshot
    query = (
        sa.select(Fragment.files)
        .join(Message, Message.id == Fragment.message_id)
        .where(Message.project_id == project_id)
        .order_by(Message.created_at.desc(), Message.seq.desc())
        .limit(1)
    )
    if up_to_run is not None:
        anchor = sa.select(Message.created_at, Message.seq).where(Message.id == up_to_run).cte()
        bound = sa.select(anchor.c.created_at, anchor.c.seq).scalar_subquery()
        query = query.where(sa.tuple_(Message.created_at, Message.seq) <= bound)
    files = (await session.execute(query)).scalar_one_or_none()
    if not files:
        return None
    return WorkspaceSnapshot(files={path: content.encode() for path, content in files.items()})
