"""The live event stream: one LISTEN connection per API process, fanned out to every client.

Clients never poll Temporal. An event is read from PostgreSQL once per process when its NOTIFY
arrives and handed to every subscriber of its project. A subscriber tracks the last number it
sent: anything older is skipped (no duplicates), and a gap (a notification lost while the
listener reconnected) is filled from the table before going on (no loss). `Last-Event-ID` is
the same number, so a reconnecting client resumes exactly where it stopped.

Memory stays bounded per client: each subscriber's queue holds at most QUEUE_SIZE events, and a
client too slow to take them is dropped (its stream ends; EventSource reconnects with
`Last-Event-ID` and reads the rest from the table). History is read and sent a page at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from runtime import metrics
from runtime.logs import get_logger
from storage import events
from storage.db import Database
from storage.events import CHANNEL, EventRow

log = get_logger("qai.api.events")

HEARTBEAT_SECONDS = 15.0
RECONNECT_SECONDS = 1.0
QUEUE_SIZE = 1000
"""Events waiting for one client; past it, the client is dropped and resumes from the table."""
PAGE_SIZE = 1000
"""Events read from the table at a time (a long history is never held whole)."""

RESYNC = object()
"""Put on every queue when the listener reconnects: subscribers re-read from the table."""


def sse_frame(row: EventRow) -> str:
    """One event in the text/event-stream format."""
    data = json.dumps(row.data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {row.seq}\nevent: {row.kind}\ndata: {data}\n\n"


class Subscriber:
    """One client's queue; `dropped` once it fell QUEUE_SIZE events behind."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=size)
        self.dropped = False

    def offer(self, item: object) -> bool:
        """Queue `item`; False (and dropped) when the client is too far behind."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True


class EventHub:
    """Owns the LISTEN connection and the subscribers' queues."""

    def __init__(
        self,
        db: Database,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._db = db
        self.heartbeat_seconds = heartbeat_seconds
        self.queue_size = queue_size
        self._subscribers: dict[uuid.UUID, set[Subscriber]] = {}
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._listening = asyncio.Event()
        self._incoming: asyncio.Queue[tuple[uuid.UUID, int]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="event-hub")
        self._pump = asyncio.create_task(self._deliver_in_order(), name="event-pump")
        await self._listening.wait()

    async def stop(self) -> None:
        for task in (self._task, self._pump):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)

    async def _listen_forever(self) -> None:
        url = self._db.url.replace("postgresql+asyncpg://", "postgresql://", 1)
        while True:
            try:
                self._connection = await asyncpg.connect(url)
                self._lost.clear()
                self._connection.add_termination_listener(lambda _c: self._lost.set())
                await self._connection.add_listener(CHANNEL, self._notified)
                if self._listening.is_set():  # a reconnect: notifications may have been missed
                    self._broadcast(RESYNC)
                self._listening.set()
                await self._lost.wait()
                log.warning("event listener lost its connection; reconnecting")
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("event listener cannot connect", error=str(error))
                self._listening.set()  # streams still work from the table
            await self._close()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        project, _, seq = payload.partition(":")
        try:
            project_id, number = uuid.UUID(project), int(seq)
        except ValueError:
            return
        if project_id in self._subscribers:
            self._incoming.put_nowait((project_id, number))

    async def _deliver_in_order(self) -> None:
        """Read each notified event once, in notification (= commit) order, and fan it out."""
        while True:
            project_id, seq = await self._incoming.get()
            try:
                async with self._db.session() as session:
                    row = await events.one(session, project_id, seq)
            except Exception as error:  # subscribers fill the gap from the table later
                log.warning("event not read", error=str(error))
                continue
            if row is None:  # the project was deleted meanwhile
                continue
            self.fan_out(project_id, row)

    def fan_out(self, project_id: uuid.UUID, item: object) -> None:
        """Hand `item` to the project's subscribers; one too far behind is let go."""
        for subscriber in list(self._subscribers.get(project_id, ())):
            if not subscriber.offer(item):
                self._forget(project_id, subscriber)

    def _broadcast(self, item: object) -> None:
        for project_id in list(self._subscribers):
            self.fan_out(project_id, item)

    def _forget(self, project_id: uuid.UUID, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(project_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[project_id]

    def subscribers(self, project_id: uuid.UUID) -> int:
        return len(self._subscribers.get(project_id, ()))

    @contextlib.asynccontextmanager
    async def subscribe(self, project_id: uuid.UUID) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(self.queue_size)
        self._subscribers.setdefault(project_id, set()).add(subscriber)
        metrics.SSE_CLIENTS.inc()
        try:
            yield subscriber
        finally:
            metrics.SSE_CLIENTS.dec()
            self._forget(project_id, subscriber)

    async def stream(self, project_id: uuid.UUID, last_seen: int) -> AsyncIterator[str]:
        """Every event after `last_seen`, then live ones, with comment heartbeats."""
        async with self.subscribe(project_id) as subscriber:  # before reading: nothing slips
            position = [last_seen]
            async for frame in self._read_after(project_id, position):
                yield frame
            queue = subscriber.queue
            while True:
                if subscriber.dropped and queue.empty():
                    log.info("slow event client dropped", project_id=str(project_id))
                    return  # the client reconnects with Last-Event-ID
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat_seconds)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                last = position[0]
                if item is RESYNC or (isinstance(item, EventRow) and item.seq > last + 1):
                    async for frame in self._read_after(project_id, position):
                        yield frame
                    continue
                if isinstance(item, EventRow) and item.seq == last + 1:
                    position[0] = item.seq
                    yield sse_frame(item)

    async def _read_after(self, project_id: uuid.UUID, position: list[int]) -> AsyncIterator[str]:
        """Frames of the events after `position[0]`, a page at a time; advances `position`."""
        while True:
            async with self._db.session() as session:
                rows = await events.after(session, project_id, position[0], limit=PAGE_SIZE)
            for row in rows:
                position[0] = row.seq
                yield sse_frame(row)
            if len(rows) < PAGE_SIZE:
                return
