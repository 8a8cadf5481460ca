"""Versions of a project: its fragments, the workspace each stands for, and making one current.

A fragment is the result of one run. The workspace it stands for is that run's snapshot (the
whole workspace, deletions and binary files included); fragments from before snapshots fall back
to their own text files.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from sandboxes.snapshot import WorkspaceSnapshot
from storage import events, images, snapshots
from storage.events import EventKind
from storage.models import Fragment, Message, MessageRole, MessageType, Project
from storage.snapshots import SnapshotRow
from storage.views import message_view


async def get_fragment(session: AsyncSession, fragment_id: uuid.UUID) -> Fragment | None:
    return await session.get(Fragment, fragment_id, populate_existing=True)


async def fragment_project(session: AsyncSession, fragment: Fragment) -> uuid.UUID:
    """The project a fragment belongs to (through its message)."""
    project_id = await session.scalar(
        sa.select(Message.project_id).where(Message.id == fragment.message_id)
    )
    assert project_id is not None  # the foreign key guarantees the message
    return project_id


async def fragment_workspace(session: AsyncSession, fragment: Fragment) -> WorkspaceSnapshot:
    """The workspace the fragment's version stands for."""
    message = await session.get(Message, fragment.message_id)
    run_id = message.reply_to_id if message is not None and message.reply_to_id else None
    archive = None
    for candidate in (run_id, fragment.message_id):
        if candidate is None:
            continue
        archive = await session.scalar(
            sa.select(SnapshotRow.archive).where(SnapshotRow.run_id == candidate)
        )
        if archive is not None:
            return await snapshots.load(session, archive)
    return WorkspaceSnapshot(files={path: text.encode() for path, text in fragment.files.items()})


async def save_restored_version(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    message_id: uuid.UUID,
    source: Fragment,
    workspace: WorkspaceSnapshot,
    sandbox_url: str,
    content: str,
) -> Message:
    """The ASSISTANT RESULT that makes `source` current, with its fragment and snapshot, once.

    The snapshot is stored under the new message, so later follow-ups restore this version.
    Calling it again returns the message already saved.
    """
    try:
        await session.scalar(
            sa.select(Project.id).where(Project.id == project_id).with_for_update()
        )
        existing = await _message(session, message_id)
        if existing is not None:
            await session.commit()
            return existing
        message = await _add_version(
            session, project_id, message_id, content, source.title, workspace, sandbox_url
        )
        await session.execute(
            sa.update(Project)
            .where(Project.id == project_id)
            .values(updated_at=sa.func.clock_timestamp())
        )
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return message


async def delete_project(session: AsyncSession, project_id: uuid.UUID) -> bool:
    """Remove the project; its messages, fragments, snapshots and events go by cascade, and its
    images unless another project references the same content."""
    await images.delete_for_project(session, project_id)
    result = await session.execute(sa.delete(Project).where(Project.id == project_id))
    await session.commit()
    return bool(result.rowcount)


async def _message(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    statement = (
        sa.select(Message)
        .where(Message.id == message_id)
        .options(selectinload(Message.fragment))
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


@dataclass(frozen=True)
class VersionRow:
    """One version of a project: a RESULT reply with a fragment, and the message it answers."""

    message_id: uuid.UUID
    created_at: datetime
    summary: str
    prompt: str | None
    """The user's message it answers; None for a restore or an import."""
    fragment_id: uuid.UUID


async def project_versions(session: AsyncSession, project_id: uuid.UUID) -> list[VersionRow]:
    """The project's versions oldest first (ERROR replies are not versions)."""
    asked = aliased(Message)
    statement = (
        sa.select(
            Message.id,
            Message.created_at,
            Message.content,
            Fragment.summary,
            Fragment.id,
            asked.content,
        )
        .join(Fragment, Fragment.message_id == Message.id)
        .outerjoin(asked, asked.id == Message.reply_to_id)
        .where(
            Message.project_id == project_id,
            Message.role == MessageRole.ASSISTANT,
            Message.type == MessageType.RESULT,
        )
        .order_by(Message.created_at, Message.seq)
    )
    return [
        VersionRow(
            message_id=row[0],
            created_at=row[1],
            summary=row[3] or row[2],
            prompt=row[5],
            fragment_id=row[4],
        )
        for row in (await session.execute(statement)).all()
    ]


async def save_imported_project(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    name: str,
    message_id: uuid.UUID,
    title: str,
    content: str,
    workspace: WorkspaceSnapshot,
    sandbox_url: str,
) -> Message:
    """A new project whose first version is an imported repository: the project, its
    ASSISTANT RESULT with fragment and snapshot, and the message's event, in one transaction."""
    try:
        session.add(Project(id=project_id, name=name))
        await session.flush()
        message = await _add_version(
            session, project_id, message_id, content, title, workspace, sandbox_url
        )
        await events.append(
            session,
            project_id,
            EventKind.MESSAGE,
            f"run:{message_id}:message:{message_id}",  # the key a restore's event has
            message_view(message),
        )
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return message


async def latest_result_fragment(session: AsyncSession, project_id: uuid.UUID) -> Fragment | None:
    """The fragment of the project's newest RESULT (its current version)."""
    statement = (
        sa.select(Fragment)
        .join(Message, Message.id == Fragment.message_id)
        .where(Message.project_id == project_id, Message.type == MessageType.RESULT)
        .order_by(Message.seq.desc())
        .limit(1)
    )
    return (await session.scalars(statement)).one_or_none()


async def _add_version(
    session: AsyncSession,
    project_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    title: str,
    workspace: WorkspaceSnapshot,
    sandbox_url: str,
) -> Message:
    """An ASSISTANT RESULT with its fragment and snapshot: a version made without a run (a
    restore or an import). The caller commits."""
    message = Message(
        id=message_id,
        project_id=project_id,
        role=MessageRole.ASSISTANT,
        type=MessageType.RESULT,
        content=content,
        fragment=None,
    )
    session.add(message)
    message.fragment = Fragment(
        message_id=message_id,
        sandbox_url=sandbox_url,
        title=title,
        files=workspace.source_files(),
        summary=content,
    )
    await session.flush()
    await snapshots.save(
        session, project_id=project_id, run_id=message_id, snapshot=workspace, tool_call_id=None
    )
    return message
