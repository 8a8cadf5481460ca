"""A saved reply's run metrics: status (cancelled told apart from ERROR), duration, iterations.

Observed in `save_reply`, the one activity every ended run passes through, never in workflow
code (which must stay deterministic).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from contract import SaveReplyInput
from runtime import metrics
from storage.db import Database
from storage.transcript import TranscriptEntry


async def _started_at(db: Database, run_id: uuid.UUID) -> datetime | None:
    """When the run's transcript began (start_run); None for a run cancelled before it."""
    async with db.session() as session:
        return await session.scalar(
            sa.select(sa.func.min(TranscriptEntry.created_at)).where(
                TranscriptEntry.run_id == run_id
            )
        )


async def run_ended(db: Database, reply: SaveReplyInput) -> None:
    status = "cancelled" if reply.cancelled else reply.status.value
    started = await _started_at(db, reply.run_id)
    seconds = None
    if started is not None:
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        seconds = max(0.0, time.time() - started.timestamp())
    checks = reply.checks if status == "RESULT" else None
    metrics.run_ended(status, reply.iterations, seconds, checks)
