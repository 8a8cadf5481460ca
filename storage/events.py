"""The project event log: what the API's live stream sends, stored so a client can resume.

Events are numbered per project (`seq` 1, 2, 3, ...). A transaction-scoped advisory lock per
project makes numbers be handed out in commit order, so a client that saw event n and asks for
everything after it can never miss one committed later with a smaller number. Each event has a
natural `key` (e.g. `run:<id>:thinking:3`), unique per project, and is inserted with ON CONFLICT
DO NOTHING: an activity that is retried writes its events again and nothing is duplicated.
Every insert NOTIFYs `qai_events` with `<project_id>:<seq>`, delivered at commit.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.models import Message

CHANNEL = "qai_events"


class EventKind(StrEnum):
    MESSAGE = "message"
    RUN = "run"
    TOOL = "tool"
    TOKEN = "token"
    ERROR = "error"


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("project_id", "key", name="uq_events_project_id_key"),)

    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
        )
    )
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    key: str = Field(sa_type=sa.Text)
    kind: str = Field(sa_type=sa.Text)
    data: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    created_at: datetime = Field(
        default=None,
        sa_column_kwargs={"server_default": sa.func.clock_timestamp(), "nullable": False},
        sa_type=sa.DateTime(timezone=True),
    )


async def append(
    session: AsyncSession,
    project_id: uuid.UUID,
    kind: EventKind,
    key: str,
    data: dict[str, Any],
) -> int | None:
    """Add an event unless one with `key` exists; its number, or None if it was there already.

    The caller commits; the advisory lock is held until then, which keeps numbers in commit order.
    """
    await session.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:project, 7))"),
        {"project": str(project_id)},
    )
    return await _insert(session, project_id, kind, key, data)


async def append_for_run(
    session: AsyncSession, run_id: uuid.UUID, kind: EventKind, key: str, data: dict[str, Any]
) -> int | None:
    """`append` for the project of the run (the user message) `run_id`; None if it is gone.

    The project's lookup and its lock are one round trip (the same lock as `append`'s).
    """
    found = await session.execute(
        sa.text(
            "SELECT project_id, "
            "pg_advisory_xact_lock(hashtextextended(CAST(project_id AS text), 7)) "
            "FROM messages WHERE id = :run"
        ),
        {"run": run_id},
    )
    row = found.first()
    if row is None:
        return None
    return await _insert(session, row[0], kind, key, data)


async def _insert(
    session: AsyncSession,
    project_id: uuid.UUID,
    kind: EventKind,
    key: str,
    data: dict[str, Any],
) -> int | None:
    """The insert and its NOTIFY in one statement (one round trip); the caller holds the lock."""
    inserted = await session.execute(
        sa.text(
            "WITH inserted AS ("
            "INSERT INTO events (project_id, seq, key, kind, data) "
            "SELECT :project, COALESCE(MAX(seq), 0) + 1, :key, :kind, CAST(:data AS jsonb) "
            "FROM events WHERE project_id = :project "
            "ON CONFLICT (project_id, key) DO NOTHING RETURNING seq) "
            "SELECT seq, pg_notify(:channel, CAST(:prefix AS text) || CAST(seq AS text)) "
            "FROM inserted"
        ),
        {
            "project": project_id,
            "key": key,
            "kind": kind.value,
            "data": _json(data),
            "channel": CHANNEL,
            "prefix": f"{project_id}:",
        },
    )
    row = inserted.first()
    return None if row is None else row[0]


async def after(
    session: AsyncSession, project_id: uuid.UUID, seq: int, limit: int = 1000
) -> list[EventRow]:
    """The project's events numbered above `seq`, in order."""
    query = (
        sa.select(EventRow)
        .where(EventRow.project_id == project_id, EventRow.seq > seq)
        .order_by(EventRow.seq)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def one(session: AsyncSession, project_id: uuid.UUID, seq: int) -> EventRow | None:
    return await session.get(EventRow, (project_id, seq))


async def latest_run_event(session: AsyncSession, project_id: uuid.UUID) -> EventRow | None:
    """The project's newest `run` event: the phase its current (or last) run reached."""
    query = (
        sa.select(EventRow)
        .where(EventRow.project_id == project_id, EventRow.kind == EventKind.RUN.value)
        .order_by(EventRow.seq.desc())
        .limit(1)
    )
    return (await session.scalars(query)).one_or_none()


async def latest_run_phase(session: AsyncSession, message_id: uuid.UUID) -> str | None:
    """The phase of the newest `run` event of the run answering `message_id` (None before any).

    Activities write phases the workflow's progress does not know, such as a wait for a slot.
    """
    project = sa.select(Message.project_id).where(Message.id == message_id).scalar_subquery()
    query = (
        sa.select(EventRow.data["phase"].astext)
        .where(
            EventRow.project_id == project,
            EventRow.kind == EventKind.RUN.value,
            EventRow.data["message_id"].astext == str(message_id),
        )
        .order_by(EventRow.seq.desc())
        .limit(1)
    )
    return await session.scalar(query)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


async def run_started_at(
    session: AsyncSession, project_id: uuid.UUID, message_id: uuid.UUID
) -> datetime | None:
    """When the run of `message_id` wrote its first `run` event: where its elapsed time starts."""
    query = sa.select(sa.func.min(EventRow.created_at)).where(
        EventRow.project_id == project_id,
        EventRow.kind == EventKind.RUN.value,
        EventRow.data["message_id"].astext == str(message_id),
    )
    return await session.scalar(query)


async def streamed_text(
    session: AsyncSession, project_id: uuid.UUID, message_id: uuid.UUID, iteration: int
) -> tuple[int, str]:
    """The model text streamed so far in one iteration of a run: (attempt, text).

    Only the newest attempt counts: a retried model call streams its text again from the start.
    """
    query = (
        sa.select(EventRow.data)
        .where(
            EventRow.project_id == project_id,
            EventRow.kind == EventKind.TOKEN.value,
            EventRow.data["message_id"].astext == str(message_id),
            EventRow.data["iteration"].astext == str(iteration),
        )
        .order_by(EventRow.seq)
    )
    chunks = list((await session.scalars(query)).all())
    if not chunks:
        return 1, ""
    attempt = max(int(chunk["attempt"]) for chunk in chunks)
    text = ""
    for chunk in sorted(
        (c for c in chunks if int(c["attempt"]) == attempt), key=lambda c: c["offset"]
    ):
        if int(chunk["offset"]) == len(text):  # contiguous only: what a client could show
            text += chunk["text"]
    return attempt, text


async def edit_diffs(session: AsyncSession, project_id: uuid.UUID) -> dict[str, list[dict]]:
    """The compact diffs of the project's editFiles calls, by the message each run answered."""
    query = (
        sa.select(EventRow.data)
        .where(
            EventRow.project_id == project_id,
            EventRow.kind == EventKind.TOOL.value,
            EventRow.data.has_key("diffs"),
        )
        .order_by(EventRow.seq)
    )
    by_run: dict[str, list[dict]] = {}
    for data in (await session.scalars(query)).all():
        by_run.setdefault(data["message_id"], []).extend(data["diffs"])
    return by_run
