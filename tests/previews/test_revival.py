"""Previews that never die, on real sandboxes: the stable URL serves the app through the
gateway (its hot-reload websocket too), revives it after the sandbox is SIGKILLed, and brings
it back after hibernation. Real parts: the time-skipping Temporal server, PostgreSQL, the
scripted model over HTTP, bubblewrap sandboxes running the Next.js dev server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import aiohttp
import httpx
import pytest

from runtime.preview_urls import loopback_target, preview_url
from sandboxes.local.layout import Layout, read_state, sandboxes_root
from storage import previews
from tests.workflows.conftest import Harness, preview_text
from tests.workflows.test_code_agent import page, summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def script(marker: str) -> dict:
    return {
        "default": {
            "title": "Marked Page",
            "turns": [write_turn("app/page.tsx", page(marker)), summary_turn("A marked page.")],
        }
    }


def sigkill(harness: Harness, sandbox_id: str) -> None:
    layout = Layout(sandboxes_root(harness.settings.data_dir) / sandbox_id)
    os.kill(read_state(layout.state)["supervisor"]["pid"], signal.SIGKILL)


async def built(harness: Harness) -> tuple[uuid.UUID, uuid.UUID, str, str]:
    """A project whose first message was answered: its id, the message's, the stable URL and
    the sandbox's id."""
    project_id, message_id = await harness.new_project("Build a marked page")
    outcome = await harness.submit(project_id, message_id)
    assert outcome.status.value == "RESULT", outcome.content
    sandbox_id = await harness.project_sandbox(project_id)
    assert outcome.sandbox_url == preview_url(harness.settings, project_id)
    return project_id, message_id, outcome.sandbox_url, sandbox_id


async def revived_sandbox(harness: Harness, project_id: uuid.UUID, old: str) -> str:
    """The project's new sandbox, once its workflow has it (the preview may answer first)."""
    async with asyncio.timeout(30):
        while (current := await harness.project_sandbox(project_id)) == old:
            await asyncio.sleep(0.1)
    harness.sandbox_ids.add(current)
    return current


async def get(url: str) -> httpx.Response:
    target, host = loopback_target(url)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(target, headers={"Host": host or ""})


async def test_the_stable_url_serves_the_app_and_its_hot_reload_socket(agent_harness) -> None:
    marker = f"gateway-{uuid.uuid4().hex[:6]}"
    async with agent_harness(script(marker)) as (harness, _llm):
        project_id, _, url, _ = await built(harness)
        assert url.startswith(f"http://{project_id}.preview.localhost:")
        await preview_text(url, marker)
        target, host = loopback_target(url)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                target.replace("http://", "ws://") + "_next/webpack-hmr", headers={"Host": host}
            ) as socket,
        ):
            message = await socket.receive(timeout=30)
            assert message.type == aiohttp.WSMsgType.TEXT, message


async def test_a_killed_sandbox_revives_at_the_same_url(agent_harness) -> None:
    marker = f"revived-{uuid.uuid4().hex[:6]}"
    async with agent_harness(script(marker)) as (harness, _llm):
        project_id, message_id, url, sandbox_id = await built(harness)
        await preview_text(url, marker)
        sigkill(harness, sandbox_id)
        async with asyncio.timeout(10):
            while await harness.services.sandboxes.find({"project_id": str(project_id)}):
                await asyncio.sleep(0.1)

        started = time.monotonic()
        first = await get(url)
        assert first.status_code == 503
        assert first.headers["retry-after"] == "1"
        assert "Starting your preview" in first.text
        await preview_text(url, marker)
        print(f"revival after SIGKILL: {time.monotonic() - started:.1f} s")
        await revived_sandbox(harness, project_id, sandbox_id)
        await harness.record_histories(project_id, message_id)  # with the revival in it


async def test_a_quiet_preview_hibernates_and_the_next_visit_revives_it(agent_harness) -> None:
    marker = f"hibernated-{uuid.uuid4().hex[:6]}"
    async with agent_harness(script(marker), qai_preview_idle_seconds=3) as (harness, _llm):
        project_id, message_id, url, sandbox_id = await built(harness)
        async with asyncio.timeout(90):
            while True:
                async with harness.db.session() as session:
                    row = await previews.get(session, project_id)
                if row is not None and row.state == previews.PreviewState.HIBERNATED:
                    break
                await asyncio.sleep(0.5)
        assert row.sandbox_id == sandbox_id
        assert await harness.services.sandboxes.find({"project_id": str(project_id)}) == []

        assert (await get(url)).status_code == 503
        await preview_text(url, marker)
        await revived_sandbox(harness, project_id, sandbox_id)
        await harness.record_histories(project_id, message_id)  # with the revival in it
