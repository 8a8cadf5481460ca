"""Writing the project's live events from activities, where every side effect belongs.

Workflow code stays pure orchestration: the activities that do the work also say so. Each event
has a natural key, so an activity that is retried writes the same events again and the store
keeps one of each (`storage.events.append`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from temporalio import activity

from storage import events
from storage.db import Database
from storage.events import EventKind

TOKEN_FLUSH_SECONDS = 0.1
"""Model text is batched this long into one `token` event: live, without a row per token."""


async def emit(
    db: Database, run_id: uuid.UUID, kind: EventKind, key: str, data: dict[str, Any]
) -> None:
    """Store one event of the run's project (once per key) and commit, which notifies."""
    async with db.session() as session:
        await events.append_for_run(session, run_id, kind, f"run:{run_id}:{key}", data)
        await session.commit()


async def run_phase(
    db: Database,
    run_id: uuid.UUID,
    phase: str,
    *,
    iteration: int = 0,
    max_iterations: int = 0,
    tool: str | None = None,
    key: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """A `run` event: the run entered `phase` (sandbox, thinking, tool, verifying, saving, done,
    or `waiting for a ... slot`); `extra` adds fields (which check started or finished)."""
    await emit(
        db,
        run_id,
        EventKind.RUN,
        f"run:{key}",
        {
            "message_id": str(run_id),
            "phase": phase,
            "iteration": iteration,
            "max_iterations": max_iterations,
            "tool": tool,
            **(extra or {}),
        },
    )


class TokenStream:
    """Model text as it streams, written as `token` events every TOKEN_FLUSH_SECONDS.

    Keys carry the activity attempt and the text's offset in the reply: a retried attempt
    streams its own text under its own keys (a client restarts the iteration's text when the
    attempt changes), and the same attempt never writes an offset twice.
    """

    def __init__(self, db: Database, run_id: uuid.UUID, iteration: int) -> None:
        self._db = db
        self._run_id = run_id
        self._iteration = iteration
        self._attempt = activity.info().attempt if activity.in_activity() else 1
        self._pending: list[str] = []
        self._offset = 0
        self._flushed_at = time.monotonic()

    async def add(self, text: str) -> None:
        self._pending.append(text)
        if time.monotonic() - self._flushed_at >= TOKEN_FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        offset, self._offset = self._offset, self._offset + len(text)
        try:
            await emit(
                self._db,
                self._run_id,
                EventKind.TOKEN,
                f"token:{self._iteration}:{self._attempt}:{offset}",
                {
                    "message_id": str(self._run_id),
                    "iteration": self._iteration,
                    "attempt": self._attempt,
                    "offset": offset,
                    "text": text,
                },
            )
        except Exception as error:  # live text is a courtesy; the paid call must go on
            activity.logger.warning("token event not stored: %s", error)
