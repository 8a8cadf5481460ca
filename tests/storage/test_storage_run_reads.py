"""What the UI reads of a running message from the event log: when it started, and the text the
model has streamed so far in an iteration (the newest attempt's, contiguous only)."""

from __future__ import annotations

import uuid

from storage import events
from storage.db import Database
from storage.events import EventKind
from storage.queries import create_project


async def _token(
    db: Database,
    project_id: uuid.UUID,
    run_id: uuid.UUID,
    iteration: int,
    attempt: int,
    offset: int,
    text: str,
) -> None:
    async with db.session() as session:
        data = {
            "message_id": str(run_id),
            "iteration": iteration,
            "attempt": attempt,
            "offset": offset,
            "text": text,
        }
        key = f"token:{run_id}:{iteration}:{attempt}:{offset}"
        await events.append(session, project_id, EventKind.TOKEN, key, data)
        await session.commit()


async def test_streamed_text_is_the_newest_attempts_contiguous_text(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, message = await create_project(session, "Streams", "make it stream")
    run_id, other_run = message.id, uuid.uuid4()
    await _token(clean_db, project.id, run_id, 1, 1, 0, "Hello ")
    await _token(clean_db, project.id, run_id, 1, 1, 6, "wörld")
    await _token(clean_db, project.id, run_id, 2, 1, 0, "Retried ")
    await _token(clean_db, project.id, run_id, 2, 2, 0, "Second ")
    await _token(clean_db, project.id, run_id, 2, 2, 7, "try")
    await _token(clean_db, project.id, run_id, 2, 2, 99, "after a gap")
    await _token(clean_db, project.id, other_run, 1, 1, 0, "another run")
    async with clean_db.session() as session:
        assert await events.streamed_text(session, project.id, run_id, 1) == (1, "Hello wörld")
        assert await events.streamed_text(session, project.id, run_id, 2) == (2, "Second try")
        assert await events.streamed_text(session, project.id, run_id, 3) == (1, "")
        assert await events.run_started_at(session, project.id, run_id) is None


async def test_a_run_starts_at_its_first_run_event(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, message = await create_project(session, "Runs", "make it run")
    for phase in ("sandbox", "thinking"):
        async with clean_db.session() as session:
            data = {"message_id": str(message.id), "phase": phase}
            await events.append(session, project.id, EventKind.RUN, f"run:{phase}", data)
            await session.commit()
    async with clean_db.session() as session:
        rows = await events.after(session, project.id, 0)
        started = await events.run_started_at(session, project.id, message.id)
        assert started == rows[0].created_at
        assert await events.run_started_at(session, project.id, uuid.uuid4()) is None
