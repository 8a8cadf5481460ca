"""`python -m scripted_llm.server` prints its URL first, serves, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import httpx
import pytest

from scripted_llm import DEMO_SCRIPT

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # each starts the server as a process


async def _start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripted_llm",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_cli_prints_the_base_url_serves_and_stops_on_sigterm():
    process = await _start("--script", str(DEMO_SCRIPT), "--port", "0")
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            first_line = (await process.stdout.readline()).decode().strip()
        assert first_line.startswith("http://127.0.0.1:")
        assert first_line.endswith("/v1")
        async with httpx.AsyncClient(base_url=first_line) as http:
            models = (await http.get("/models")).json()
            title = (
                await http.post(
                    "/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "todo"}]},
                )
            ).json()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()

    assert models["data"][0]["id"] == "scripted"
    assert title["choices"][0]["message"]["content"] == "Task tracker"
    assert process.returncode == 0
    assert b"title todo" in stderr  # one log line per request


async def test_cli_reports_an_invalid_script_in_one_message(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"default": {"turns": [{"content": "x", "faults": [{}]}]}}))
    process = await _start("--script", str(bad))
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()

    assert process.returncode == 2
    assert stdout == b""
    text = stderr.decode()
    assert "default.turns.0.faults.0: a fault needs" in text
    assert "Traceback" not in text


async def test_cli_reports_a_busy_port():
    first = await _start("--script", str(DEMO_SCRIPT))
    try:
        assert first.stdout is not None
        async with asyncio.timeout(30):
            url = (await first.stdout.readline()).decode().strip()
        port = url.rsplit(":", 1)[1].split("/")[0]
        second = await _start("--script", str(DEMO_SCRIPT), "--port", port)
        async with asyncio.timeout(30):
            _, stderr = await second.communicate()
    finally:
        first.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await first.communicate()

    assert second.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in stderr.decode()
    assert "Traceback" not in stderr.decode()
