"""A run's CPU-heavy step takes one of the host's slots (`runtime.slots`), and says so.

Any activity doing CPU-heavy work on a sandbox (a check, a browser page, a build) wraps that
work in `cpu_slot`. While it waits, the run's phase is `waiting for a <kind> slot` (events, so
the API, the Web UI and the CLI show it); once it holds the slot, the phase it was in comes back.
Each step's start and end are run events too (`step`, `finished`), so the event stream shows
which steps ran at the same time.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio import activity

from activities.events import run_phase
from activities.services import Services
from runtime.slots import WAIT_PHASES, host_slots


@asynccontextmanager
async def cpu_slot(
    services: Services,
    run_id: uuid.UUID,
    kind: str,
    step: str,
    *,
    phase: str = "verifying",
    max_iterations: int = 0,
) -> AsyncIterator[float]:
    """Hold a `kind` slot of this host for the block; yields the seconds waited."""
    info = activity.info()
    key = f"{step}:{info.activity_id}:{info.attempt}"

    async def event(phase: str, name: str, extra: dict[str, Any] | None = None) -> None:
        await run_phase(
            services.db,
            run_id,
            phase,
            max_iterations=max_iterations,
            key=f"{name}:{key}",
            extra=extra,
        )

    async def waiting() -> None:
        await event(WAIT_PHASES[kind], "slot-wait")

    async with host_slots(services.settings).hold(kind, on_wait=waiting) as waited:
        await event(phase, "step", {"step": step, "waited": round(waited, 3)})
        ended = {"step": step, "finished": True}
        try:
            yield waited
        except BaseException:
            with contextlib.suppress(Exception):  # the step's own error is the one to report
                await event(phase, "step-end", ended)
            raise
        await event(phase, "step-end", ended)
