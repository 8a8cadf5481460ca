"""The event hub's memory stays bounded: a slow client is dropped (and resumes from the table
with Last-Event-ID), and a long history is read a page at a time. Real PostgreSQL, no HTTP."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from api import events as hub_module
from api.events import EventHub
from storage import queries
from storage.db import Database
from storage.events import EventRow


async def _project_with_events(db: Database, count: int) -> uuid.UUID:
    async with db.session() as session:
        project, _ = await queries.create_project(session, "events", "A project with history")
        await session.execute(
            text(
                "INSERT INTO events (project_id, seq, key, kind, data) "
                "SELECT :p, n, 'k' || n, 'tool', '{}'::jsonb FROM generate_series(1, :n) n"
            ),
            {"p": project.id, "n": count},
        )
        await session.commit()
    return project.id


def _row(project_id: uuid.UUID, seq: int) -> EventRow:
    return EventRow(project_id=project_id, seq=seq, key=f"k{seq}", kind="tool", data={})


async def test_a_slow_client_is_dropped_and_resumes_from_the_table(clean_db: Database) -> None:
    project_id = await _project_with_events(clean_db, 0)
    hub = EventHub(clean_db, heartbeat_seconds=30, queue_size=5)
    stream = hub.stream(project_id, 0)
    first = asyncio.ensure_future(stream.__anext__())
    while hub.subscribers(project_id) == 0:
        await asyncio.sleep(0.01)
    hub.fan_out(project_id, _row(project_id, 1))
    assert (await first).startswith("id: 1\n")
    for seq in range(2, 20):  # the client reads nothing meanwhile
        hub.fan_out(project_id, _row(project_id, seq))
    assert hub.subscribers(project_id) == 0  # let go: nothing more is queued for it
    rest = [frame async for frame in stream]  # what was queued, then the stream ends
    assert [frame.split("\n")[0] for frame in rest] == [f"id: {n}" for n in range(2, 7)]


async def test_a_stream_without_last_event_id_reads_history_a_page_at_a_time(
    clean_db: Database, monkeypatch
) -> None:
    project_id = await _project_with_events(clean_db, 25)
    monkeypatch.setattr(hub_module, "PAGE_SIZE", 10)
    reads: list[int] = []
    original = hub_module.events.after

    async def counted(session, project, seq, limit=1000):  # type: ignore[no-untyped-def]
        reads.append(seq)
        return await original(session, project, seq, limit=limit)

    monkeypatch.setattr(hub_module.events, "after", counted)
    hub = EventHub(clean_db, heartbeat_seconds=30)
    stream = hub.stream(project_id, 0)
    assert (await stream.__anext__()).startswith("id: 1\n")
    assert reads == [0]  # one page in memory, not the whole history
    frames = [await stream.__anext__() for _ in range(24)]
    assert frames[-1].startswith("id: 25\n") and reads == [0, 10, 20]
    await stream.aclose()


async def test_an_open_stream_counts_in_the_sse_gauge_until_it_closes(clean_db: Database) -> None:
    from runtime import metrics

    project_id = await _project_with_events(clean_db, 1)
    hub = EventHub(clean_db, heartbeat_seconds=30)
    before = metrics.SSE_CLIENTS._value.get()
    stream = hub.stream(project_id, 0)
    assert (await stream.__anext__()).startswith("id: 1\n")
    assert metrics.SSE_CLIENTS._value.get() == before + 1
    await stream.aclose()
    assert metrics.SSE_CLIENTS._value.get() == before
