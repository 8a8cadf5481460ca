"""Admission control: with one CPU slot, two runs' checks take turns, and the wait is shown.

Real sandboxes, real checks, the scripted model over HTTP. The test holds the host's only slot
while both runs reach their checks, so both must show `waiting for a check slot` in the API and
in the CLI's progress line; then it lets go, and both finish with checks that never overlapped
(from the event stream's timestamps).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid

import httpx
import pytest
import sqlalchemy as sa

from api.server import running_api
from runtime.slots import host_slots
from starter import Progress
from storage import events
from submission import wait_for_reply
from tests.workflows.test_code_agent import summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

WAITING = "waiting for a check slot"
PAGE = "export default function Page() { return <h1>Slots</h1>; }\n"


async def step_intervals(harness, project_id: uuid.UUID) -> list[tuple[float, float, str]]:
    """(start, end, step) of each slot-holding step of the project's run, from its events."""
    async with harness.db.session() as session:
        rows = (
            await session.execute(
                sa.select(events.EventRow.data, events.EventRow.created_at)
                .where(events.EventRow.project_id == project_id)
                .where(events.EventRow.kind == "run")
                .order_by(events.EventRow.seq)
            )
        ).all()
    starts: dict[str, float] = {}
    intervals = []
    for data, created in rows:
        if "step" not in data:
            continue
        if data.get("finished"):
            intervals.append((starts.pop(data["step"]), created.timestamp(), data["step"]))
        else:
            starts[data["step"]] = created.timestamp()
    assert starts == {}, f"steps without an end: {starts}"
    return intervals


async def test_one_slot_makes_two_runs_check_in_turn(
    agent_harness, database_url, capsys: pytest.CaptureFixture[str]
) -> None:
    script = {"default": {"turns": [write_turn("app/page.tsx", PAGE), summary_turn("Slots.")]}}
    async with agent_harness(script, qai_cpu_slots=1) as (harness, _llm):
        runs = [await harness.new_project(f"Build page {n}") for n in range(2)]
        try:
            await check_in_turn(harness, runs, database_url, capsys)
        finally:  # the harness kills the sandboxes it knows of
            for project_id, _ in runs:
                with contextlib.suppress(Exception):
                    status = await harness.project_status(project_id)
                    if status.sandbox_id:
                        harness.sandbox_ids.add(status.sandbox_id)


async def check_in_turn(harness, runs, database_url: str, capsys) -> None:
    """Hold the only slot until both runs wait for it, then let both finish."""
    settings = harness._settings().model_copy(update={"qai_api_port": 0})
    seen: dict[uuid.UUID, set[str]] = {message: set() for _, message in runs}
    progress = Progress(enabled=True)

    def shown(message_id: uuid.UUID):
        def on_wait(waiting) -> None:
            progress.show(waiting)
            if waiting.slot_wait:
                seen[message_id].add(waiting.slot_wait)

        return on_wait

    async with running_api(settings, database_url, harness.client) as api:
        async with host_slots(harness.settings).hold("check"):
            for project_id, message_id in runs:
                await harness.accept(project_id, message_id)
            waits = [
                asyncio.create_task(
                    wait_for_reply(
                        harness.client,
                        harness.db,
                        settings,
                        message_id,
                        on_wait=shown(message_id),
                        poll_seconds=0.2,
                    )
                )
                for _, message_id in runs
            ]
            async with httpx.AsyncClient(base_url=api) as http, asyncio.timeout(240):
                phases: dict[uuid.UUID, str | None] = {}
                while any(phase != WAITING for phase in phases.values()) or not phases:
                    for project_id, _ in runs:
                        response = await http.get(f"/api/projects/{project_id}")
                        ok = response.status_code == 200  # 404 until the project is written
                        running = response.json()["running"] if ok else None
                        phases[project_id] = running["phase"] if running else None
                    await asyncio.sleep(0.2)
                # Both runs wait: the CLI's progress line says so too.
                while not all(WAITING in s for s in seen.values()):
                    await asyncio.sleep(0.2)
        async with asyncio.timeout(240):
            replies = await asyncio.gather(*waits)

    for reply in replies:
        assert reply.type.value == "RESULT", reply.content
        assert reply.fragment is not None
        checks = reply.fragment.checks
        assert (checks["status"], checks["errors"], checks["rounds"]) == ("passed", [], 0)
        assert {"types", "routes"} <= set(checks["ran"]), checks
    assert WAITING in capsys.readouterr().err
    intervals = []
    for project_id, _ in runs:
        intervals += await step_intervals(harness, project_id)
    intervals.sort()
    steps = sorted(step for *_, step in intervals)
    assert steps == ["routes", "routes", "types", "types"], intervals
    for (_, end, _), (start, _, _) in itertools.pairwise(intervals):
        assert end <= start, f"two checks overlapped: {intervals}"
