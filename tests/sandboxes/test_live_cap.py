"""The per-host cap on live local sandboxes (QAI_SANDBOX_MAX_LIVE): a new one waits, saying why,
until one is gone. Sandbox directories stand in for live sandboxes (no bubblewrap needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.settings import Settings
from sandboxes.local import backend as backend_module
from sandboxes.local.backend import LocalBackend


async def test_past_the_cap_a_new_sandbox_waits_with_a_progress_line(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(backend_module, "LIVE_CAP_POLL_SECONDS", 0.02)
    settings = Settings(_env_file=None, qai_data_dir=tmp_path, qai_sandbox_max_live=2)  # type: ignore[call-arg]
    backend = LocalBackend(settings)
    backend.root.mkdir(parents=True)
    live = [backend.root / f"sbx-{n:012x}" for n in range(2)]
    for path in live:
        path.mkdir()
    told: list[str] = []

    async def on_wait(words: str) -> None:
        told.append(words)

    waiting = asyncio.ensure_future(backend.wait_for_room(on_wait))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert told == [
        "waiting for a free sandbox: this host runs its limit of 2 (QAI_SANDBOX_MAX_LIVE); "
        "2 are live"
    ]  # once, not at every poll
    live[0].rmdir()
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(backend.wait_for_room(on_wait), 1)  # room: no wait, no line
    assert len(told) == 1
