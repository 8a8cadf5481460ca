"""Appending events: a run's event goes to its project, numbered, once per key, and NOTIFYs."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from storage import events
from storage.db import Database
from storage.events import CHANNEL, EventKind
from storage.queries import create_project


async def test_a_run_event_is_numbered_once_and_notified_at_commit(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, message = await create_project(session, "p", "Build a page")
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(clean_db.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        numbers = []
        for key in ("run:a", "run:b", "run:a"):  # the third repeats the first key
            async with clean_db.session() as session:
                numbers.append(
                    await events.append_for_run(
                        session,
                        message.id,
                        EventKind.RUN,
                        key,
                        {"message_id": str(message.id), "phase": "thinking"},
                    )
                )
                await session.commit()
        assert numbers == [1, 2, None]
        assert [await asyncio.wait_for(heard.get(), 5) for _ in range(2)] == [
            f"{project.id}:1",
            f"{project.id}:2",
        ]
        await asyncio.sleep(0.2)
        assert heard.empty()  # a repeated key inserts nothing and notifies nothing
        async with clean_db.session() as session:
            assert (
                await events.append_for_run(session, uuid.uuid4(), EventKind.RUN, "run:c", {})
                is None
            )  # a run whose message is gone
            assert await events.latest_run_phase(session, message.id) == "thinking"
    finally:
        await listener.close()
