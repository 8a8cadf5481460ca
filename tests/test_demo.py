"""The README's main job: `deploy/demo.py` brings the stack up, builds the example app with the
scripted model and prints a preview URL that serves it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runtime.processes import free_port
from runtime.settings import Settings
from sandboxes.local.backend import LocalBackend

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


async def test_demo_builds_the_example_app_offline() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "QAI_", "TEMPORAL_", "DATABASE_URL"))
    }
    env.update(
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        QAI_TEMPORAL_UI_PORT=str(free_port()),
        QAI_SANDBOX_POOL_SIZE="0",
        QAI_DATA_DIR=str(ROOT / ".qai"),
    )
    backend = LocalBackend(Settings(_env_file=None, qai_data_dir=ROOT / ".qai"))
    before = set(backend.list_ids())
    try:
        demo = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "deploy/demo.py", "--exit"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        assert "SCRIPTED DEMO MODEL is in use" in demo.stdout
        preview = re.search(r"Preview \(HTTP 200\): (http://127\.0\.0\.1:\d+)", demo.stdout)
        assert preview, demo.stdout[-2000:]
        assert re.search(
            r"Web UI:  http://localhost:\d+/namespaces/default/workflows/agent-run-", demo.stdout
        )
        # The app outlives the stack: its sandbox keeps serving the generated page.
        async with httpx.AsyncClient(timeout=60) as client:
            page = await client.get(preview.group(1))
        assert page.status_code == 200 and "Clear done" in page.text
    finally:
        for sandbox_id in set(backend.list_ids()) - before:
            await backend.kill(sandbox_id)
