"""The agent's working memory for one run, kept in PostgreSQL instead of Temporal history.

A run's id is the id of the user message it answers. Its transcript (the chat messages sent to
the model), the files it wrote and its title live here, so workflow history only carries ids
and short results, and every activity can be retried without repeating paid work:
an assistant entry per iteration and a tool entry per tool call id are unique.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

CHAT_ROLES = ("system", "user", "assistant", "tool")
TITLE_ROLE = "title"


def _now() -> datetime:
    return datetime.now(UTC)


class TranscriptEntry(SQLModel, table=True):
    __tablename__ = "transcript_entries"
    __table_args__ = (
        sa.Index(
            "uq_transcript_tool_call",
            "run_id",
            "tool_call_id",
            unique=True,
            postgresql_where=sa.text("tool_call_id IS NOT NULL"),
        ),
        sa.Index(
            "uq_transcript_turn",
            "run_id",
            "iteration",
            "role",
            unique=True,
            postgresql_where=sa.text("role IN ('assistant', 'title', 'user')"),
        ),
    )

    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
        )
    )
    seq: int = Field(primary_key=True)
    iteration: int
    role: str = Field(sa_type=sa.Text)
    tool_call_id: str | None = Field(default=None, sa_type=sa.Text)
    message: dict[str, Any] = Field(sa_column=sa.Column(JSONB, nullable=False))
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    created_at: datetime = Field(
        default_factory=_now, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )


class RunFile(SQLModel, table=True):
    __tablename__ = "run_files"

    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
        )
    )
    path: str = Field(primary_key=True, sa_type=sa.Text)
    content: str = Field(sa_type=sa.Text)
    updated_at: datetime = Field(
        default_factory=_now, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )


async def start(session: AsyncSession, run_id: uuid.UUID, *, system: str, user: str) -> None:
    """Write the system prompt and the user payload as entries 0 and 1, once."""
    statement = (
        insert(TranscriptEntry)
        .values(
            [
                {
                    "run_id": run_id,
                    "seq": 0,
                    "iteration": 0,
                    "role": "system",
                    "message": {"role": "system", "content": system},
                    "created_at": _now(),
                },
                {
                    "run_id": run_id,
                    "seq": 1,
                    "iteration": 0,
                    "role": "user",
                    "message": {"role": "user", "content": user},
                    "created_at": _now(),
                },
            ]
        )
        .on_conflict_do_nothing()
    )
    await session.execute(statement)


async def append_entry(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    role: str,
    iteration: int,
    message: dict[str, Any],
    tool_call_id: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> TranscriptEntry:
    """Append once: a retried append of the same turn or tool call returns the stored entry."""
    existing = await _find(
        session, run_id, role=role, iteration=iteration, tool_call_id=tool_call_id
    )
    if existing is not None:
        return existing
    next_seq = sa.select(sa.func.coalesce(sa.func.max(TranscriptEntry.seq) + 1, 0)).where(
        TranscriptEntry.run_id == run_id
    )
    statement = (
        insert(TranscriptEntry)
        .values(
            run_id=run_id,
            seq=next_seq.scalar_subquery(),
            iteration=iteration,
            role=role,
            tool_call_id=tool_call_id,
            message=message,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            created_at=_now(),
        )
        .on_conflict_do_nothing()
    )
    await session.execute(statement)
    stored = await _find(session, run_id, role=role, iteration=iteration, tool_call_id=tool_call_id)
    if stored is None:  # a concurrent writer took the sequence number: try once more
        await session.execute(statement)
        stored = await _find(
            session, run_id, role=role, iteration=iteration, tool_call_id=tool_call_id
        )
    if stored is None:
        raise RuntimeError(f"could not append a {role} entry to the transcript of run {run_id}")
    return stored


async def _find(
    session: AsyncSession,
    run_id: uuid.UUID,
    *,
    role: str,
    iteration: int,
    tool_call_id: str | None,
) -> TranscriptEntry | None:
    query = sa.select(TranscriptEntry).where(TranscriptEntry.run_id == run_id)
    if tool_call_id is not None:
        query = query.where(TranscriptEntry.tool_call_id == tool_call_id)
    elif role in ("assistant", TITLE_ROLE, "user"):
        query = query.where(TranscriptEntry.role == role, TranscriptEntry.iteration == iteration)
    else:
        return None
    return (await session.execute(query)).scalars().first()


async def chat_messages(session: AsyncSession, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """The transcript as OpenAI chat messages, oldest first."""
    query = (
        sa.select(TranscriptEntry.message)
        .where(TranscriptEntry.run_id == run_id, TranscriptEntry.role.in_(CHAT_ROLES))
        .order_by(TranscriptEntry.seq)
    )
    return list((await session.execute(query)).scalars())


async def assistant_turn(
    session: AsyncSession, run_id: uuid.UUID, iteration: int
) -> TranscriptEntry | None:
    return await _find(session, run_id, role="assistant", iteration=iteration, tool_call_id=None)


async def tool_call_ids(session: AsyncSession, run_id: uuid.UUID) -> set[str]:
    """Ids of every tool call the model made in this run so far."""
    query = sa.select(TranscriptEntry.message).where(
        TranscriptEntry.run_id == run_id, TranscriptEntry.role == "assistant"
    )
    return {
        call["id"]
        for message in (await session.execute(query)).scalars()
        for call in message.get("tool_calls") or []
    }


async def tool_result(
    session: AsyncSession, run_id: uuid.UUID, tool_call_id: str
) -> TranscriptEntry | None:
    return await _find(session, run_id, role="tool", iteration=0, tool_call_id=tool_call_id)


async def stored_title(session: AsyncSession, run_id: uuid.UUID) -> str | None:
    entry = await _find(session, run_id, role=TITLE_ROLE, iteration=0, tool_call_id=None)
    return entry.message.get("content") if entry else None


async def usage(session: AsyncSession, run_id: uuid.UUID) -> tuple[int, int]:
    """Prompt and completion tokens of every paid call of the run (title included)."""
    query = sa.select(
        sa.func.coalesce(sa.func.sum(TranscriptEntry.prompt_tokens), 0),
        sa.func.coalesce(sa.func.sum(TranscriptEntry.completion_tokens), 0),
    ).where(TranscriptEntry.run_id == run_id)
    prompt, completion = (await session.execute(query)).one()
    return int(prompt), int(completion)


async def transcript_chars(session: AsyncSession, run_id: uuid.UUID) -> int:
    """Size of the transcript as JSON text, for the history-size benchmark."""
    query = sa.select(
        sa.func.coalesce(sa.func.sum(sa.func.length(sa.cast(TranscriptEntry.message, sa.Text))), 0)
    ).where(TranscriptEntry.run_id == run_id)
    return int((await session.execute(query)).scalar_one())


async def record_files(session: AsyncSession, run_id: uuid.UUID, files: dict[str, str]) -> None:
    """Upsert what the agent wrote; writing the same file twice keeps the last content."""
    if not files:
        return
    statement = insert(RunFile).values(
        [
            {"run_id": run_id, "path": p, "content": c, "updated_at": _now()}
            for p, c in files.items()
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=[RunFile.run_id, RunFile.path],
        set_={"content": statement.excluded.content, "updated_at": statement.excluded.updated_at},
    )
    await session.execute(statement)


async def file_count(session: AsyncSession, run_id: uuid.UUID) -> int:
    query = sa.select(sa.func.count()).where(RunFile.run_id == run_id)
    return int((await session.execute(query)).scalar_one())
