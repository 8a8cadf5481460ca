"""Workspace snapshots in PostgreSQL: one per run, replaced after each of its tool calls.

A run's snapshot is what its project had changed relative to the template after the run's last
completed tool call. A new sandbox gets the latest one back, whether it replaces a sandbox that
died mid-run or serves a follow-up after the old one expired.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from sandboxes.snapshot import WorkspaceSnapshot, sha256
from storage.images import ImageRow, MessageImage
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
    archived = await _without_stored_images(session, project_id, snapshot)
    values = {
        "run_id": run_id,
        "project_id": project_id,
        "tool_call_id": tool_call_id,
        "archive": archived.to_archive(),
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
    return await load(session, archive) if archive is not None else None


UPLOADS = "public/uploads/"


async def _without_stored_images(
    session: AsyncSession, project_id: uuid.UUID, snapshot: WorkspaceSnapshot
) -> WorkspaceSnapshot:
    """The snapshot with the project's own images (stored once in `images`) left out of the
    archive and named by sha256 instead: otherwise every later run would store them again."""
    hashes = {
        path: sha256(data) for path, data in snapshot.files.items() if path.startswith(UPLOADS)
    }
    if not hashes:
        return snapshot
    known = set(
        (
            await session.execute(
                sa.select(MessageImage.image_id).where(
                    MessageImage.project_id == project_id,
                    MessageImage.image_id.in_(set(hashes.values())),
                )
            )
        ).scalars()
    )
    elsewhere = {path: digest for path, digest in hashes.items() if digest in known}
    if not elsewhere:
        return snapshot
    files = {path: data for path, data in snapshot.files.items() if path not in elsewhere}
    return replace(snapshot, files=files, elsewhere={**snapshot.elsewhere, **elsewhere})


async def load(session: AsyncSession, archive: bytes) -> WorkspaceSnapshot:
    """A stored snapshot, with the images its archive names put back in its files."""
    snapshot = WorkspaceSnapshot.from_archive(archive)
    if not snapshot.elsewhere:
        return snapshot
    rows = await session.execute(
        sa.select(ImageRow.id, ImageRow.data).where(
            ImageRow.id.in_(set(snapshot.elsewhere.values()))
        )
    )
    stored = dict(rows.all())
    for path, digest in snapshot.elsewhere.items():
        if digest in stored:
            snapshot.files[path] = stored[digest]
        else:  # cannot happen while the project lives; never pretend it was kept
            snapshot.skipped.append(path)
    snapshot.elsewhere = {}
    return snapshot


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


async def has_run_snapshot(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Whether the run has saved a snapshot of its own yet."""
    found = await session.scalar(sa.select(SnapshotRow.run_id).where(SnapshotRow.run_id == run_id))
    return found is not None
