"""Two worker hosts on one machine: each `worker.py` has its own data dir (its sandboxes), its
own host task queue and its own gateway, on one Temporal dev server and one PostgreSQL.

A project's preview and follow-ups work through either gateway, whichever host holds its
sandbox; when that host disappears (its worker and sandboxes killed), the next visit revives
the preview on the other host from the workspace snapshot.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime.processes import free_port
from runtime.settings import Settings
from runtime.temporal import connect_temporal
from sandboxes.local.backend import LocalBackend
from scripted_llm import scripted_llm_server
from storage import previews
from storage.db import Database
from submission import submit_prompt, wait_for_reply
from tests.stopping import link_project_templates, start_worker, worker_env
from tests.workflows.conftest import preview_text, settings_for
from tests.workflows.test_code_agent import page, summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

HOSTS = ("host-a", "host-b")


def script() -> dict:
    return {
        "conversations": [
            {
                "match": "second",
                "title": "Second",
                "turns": [write_turn("app/page.tsx", page("Second version")), summary_turn("2")],
            }
        ],
        "default": {
            "title": "First",
            "turns": [write_turn("app/page.tsx", page("First version")), summary_turn("1")],
        },
    }


def gateway_url(url: str, port: int) -> str:
    """The same preview URL, asked of the gateway on `port` (as a load balancer would)."""
    base, _, _ = url.rstrip("/").rpartition(":")
    return f"{base}:{port}/"


async def test_two_hosts_share_projects_and_revive_a_lost_hosts_preview(
    temporal_dev_server: str,
    database_url: str,
    clean_db: Database,
    template_ready: Path,
    tmp_path: Path,
) -> None:
    task_queue = f"hosts-{uuid.uuid4().hex[:8]}"
    ports = {host: free_port() for host in HOSTS}
    public = f"http://{{project_id}}.preview.localhost:{ports['host-a']}"
    workers: dict[str, subprocess.Popen[bytes]] = {}
    data_dirs: dict[str, Path] = {}
    async with scripted_llm_server(script()) as llm:
        base = worker_env(
            DATABASE_URL=database_url,
            TEMPORAL_ADDRESS=temporal_dev_server,
            QAI_TASK_QUEUE=task_queue,
            OPENAI_BASE_URL=llm.base_url,
            OPENAI_API_KEY="test-key",
            QAI_MODEL="scripted",
            QAI_TITLE_MODEL="scripted",
            QAI_SANDBOX_NETWORK="none",
            QAI_SANDBOX_POOL_SIZE="0",
            QAI_PREVIEW_URL=public,
            QAI_LOG_FORMAT="json",
        )
        for host in HOSTS:
            data_dirs[host] = tmp_path / host
            data_dirs[host].mkdir()
            link_project_templates(data_dirs[host])
            env = dict(
                base,
                QAI_DATA_DIR=str(data_dirs[host]),
                QAI_HOST_ID=host,
                QAI_PREVIEW_PORT=str(ports[host]),
                QAI_HOST_ADDRESS=f"127.0.0.1:{ports[host]}",
                QAI_METRICS_PORT=str(free_port()),  # two hosts on one machine: a port each
            )
            workers[host] = start_worker(env, tmp_path / f"{host}.log")
        settings = settings_for(
            llm.base_url, temporal_address=temporal_dev_server, qai_task_queue=task_queue
        )
        client = await connect_temporal(temporal_dev_server)
        try:
            first = await submit_prompt(client, clean_db, settings, "Build the first version")
            project_id = first.project_id
            async with asyncio.timeout(240):
                reply = await wait_for_reply(client, clean_db, settings, first.message_id)
            assert reply.fragment is not None, (reply.content, _logs(tmp_path))
            url = reply.fragment.sandbox_url
            assert url == public.replace("{project_id}", str(project_id)) + "/"
            owner = await _row(clean_db, project_id)
            for port in ports.values():  # either gateway serves it
                await preview_text(gateway_url(url, port), "First version")

            # A follow-up runs on the host holding the sandbox, and reuses it.
            second = await submit_prompt(
                client, clean_db, settings, "Now the second version", project_id=project_id
            )
            async with asyncio.timeout(240):
                await wait_for_reply(client, clean_db, settings, second.message_id)
            after = await _row(clean_db, project_id)
            assert (after.host_id, after.sandbox_id) == (owner.host_id, owner.sandbox_id)
            for port in ports.values():
                await preview_text(gateway_url(url, port), "Second version")

            # The owner host disappears, its sandboxes with it.
            lost, survivor = owner.host_id, next(h for h in HOSTS if h != owner.host_id)
            os.killpg(workers[lost].pid, signal.SIGKILL)
            workers[lost].wait(timeout=10)
            lost_backend = LocalBackend(
                Settings(_env_file=None, qai_data_dir=data_dirs[lost])  # type: ignore[call-arg]
            )
            assert await lost_backend.kill(owner.sandbox_id)

            await preview_text(gateway_url(url, ports[survivor]), "Second version", 180)
            revived = await _row(clean_db, project_id)
            assert revived.host_id == survivor and revived.sandbox_id != owner.sandbox_id
        finally:
            for worker in workers.values():
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(timeout=30)
            for host in HOSTS:
                backend = LocalBackend(
                    Settings(_env_file=None, qai_data_dir=data_dirs[host])  # type: ignore[call-arg]
                )
                for sandbox_id in backend.list_ids():
                    await backend.kill(sandbox_id)


async def _row(db: Database, project_id: uuid.UUID) -> previews.PreviewRow:
    async with db.session() as session:
        row = await previews.get(session, project_id)
    assert row is not None
    return row


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log")))
