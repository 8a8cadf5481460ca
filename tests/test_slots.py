"""The host's CPU slots: at most `count` holders at once, across tasks and processes."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.settings import Settings
from runtime.slots import HostSlots, host_slots, slot_count


async def test_one_slot_serialises_holders_and_announces_the_wait(tmp_path: Path) -> None:
    slots = HostSlots(tmp_path, 1, poll=0.01)
    intervals: list[tuple[float, float]] = []
    waits: list[str] = []

    async def step(name: str) -> None:
        async def waiting() -> None:
            waits.append(name)

        async with slots.hold("check", on_wait=waiting):
            began = time.monotonic()
            await asyncio.sleep(0.05)
            intervals.append((began, time.monotonic()))

    await asyncio.gather(*(step(f"step {n}") for n in range(4)))
    intervals.sort()
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(intervals))
    assert sorted(waits) == ["step 1", "step 2", "step 3"]  # the first one took it at once


async def test_two_slots_let_two_run_together(tmp_path: Path) -> None:
    slots = HostSlots(tmp_path, 2, poll=0.01)
    inside = peak = 0

    async def step() -> None:
        nonlocal inside, peak
        async with slots.hold("check"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(step() for _ in range(5)))
    assert peak == 2


async def test_a_slot_held_by_another_process_is_waited_for_and_freed_when_it_exits(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220 - a stand-in for another worker process
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / '0.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        slots = HostSlots(tmp_path, 1, poll=0.01)
        waited = asyncio.Event()

        async def take() -> float:
            async with slots.hold("check", on_wait=_set(waited)) as seconds:
                return seconds

        task = asyncio.create_task(take())
        await asyncio.wait_for(waited.wait(), 5)
        await asyncio.sleep(0.2)
        assert not task.done()
        holder.kill()  # a process that dies frees its slot
        assert await asyncio.wait_for(task, 5) > 0.2
    finally:
        holder.kill()
        holder.wait()


def _set(event: asyncio.Event):
    async def waiting() -> None:
        event.set()

    return waiting


async def test_the_count_is_the_setting_or_the_cores(tmp_path: Path) -> None:
    import os

    settings = Settings(_env_file=None, qai_data_dir=tmp_path)  # type: ignore[call-arg]
    assert slot_count(settings) == (os.cpu_count() or 1)
    one = settings.model_copy(update={"qai_cpu_slots": 1})
    assert slot_count(one) == 1
    assert host_slots(one) is host_slots(one)
    assert host_slots(one).directory == tmp_path.resolve() / "slots"
    with pytest.raises(ValueError):
        HostSlots(tmp_path, 0)
