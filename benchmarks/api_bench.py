"""API figures: p50/p99 of `GET /api/projects` with 1,000 projects, and p50 of event delivery
(event committed -> received by an SSE client) with 50 clients on one project.

    .venv/bin/python benchmarks/api_bench.py

Uses an embedded PostgreSQL in a temporary directory and Temporal's test server (the list and
the stream never call Temporal).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.server import running_api  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from storage import events  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.events import EventKind  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

PROJECTS = 1000
LIST_REQUESTS = 300
CLIENTS = 50
EVENTS = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(db: Database) -> uuid.UUID:
    async with db.session() as session:
        await session.execute(
            sa.text(
                "INSERT INTO projects (id, name) SELECT gen_random_uuid(), 'project-' || n "
                "FROM generate_series(1, :n) n"
            ),
            {"n": PROJECTS},
        )
        await session.execute(
            sa.text(
                "INSERT INTO messages (project_id, role, type, content) "
                "SELECT id, 'USER', 'RESULT', 'Build an app' FROM projects"
            )
        )
        await session.execute(
            sa.text(
                "INSERT INTO messages (project_id, role, type, content) "
                "SELECT id, 'ASSISTANT', 'RESULT', 'Built it.' FROM projects"
            )
        )
        await session.execute(
            sa.text(
                "INSERT INTO fragments (message_id, sandbox_url, title, files) "
                "SELECT id, 'http://127.0.0.1:9/', 'App', '{}'::jsonb FROM messages "
                "WHERE role = 'ASSISTANT'"
            )
        )
        project = await session.scalar(sa.text("SELECT id FROM projects LIMIT 1"))
        await session.commit()
    return project


async def listen(http: httpx.AsyncClient, project: uuid.UUID, delays: list[float]) -> None:
    async with http.stream("GET", f"/api/projects/{project}/events", timeout=None) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                delays.append(time.time() - data["committed"])
                if data["n"] == EVENTS - 1:
                    return


async def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="qai-bench-"))
    data_dir.chmod(0o711)
    postgres = EmbeddedPostgres(data_dir, durable=False)
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sys.prefix) / "bin" / "temporal-test-server"),
    )
    try:
        url = await postgres.start()
        await upgrade(url)
        db = Database(url, pool_size=10)
        project = await seed(db)
        # All clients come from one address: let it hold them all, and open them all.
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            qai_api_port=0,
            qai_sse_max_per_client=CLIENTS + 5,
            qai_action_rate_limit="1000/minute",
        )
        async with (
            running_api(settings, url, env.client) as base,
            httpx.AsyncClient(
                base_url=base, limits=httpx.Limits(max_connections=CLIENTS + 5)
            ) as http,
        ):
            timings = []
            for _ in range(LIST_REQUESTS):
                started = time.perf_counter()
                response = await http.get("/api/projects")
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200 and len(response.json()["projects"]) == 50
            print(
                f"GET /api/projects ({PROJECTS} projects, page of 50, {LIST_REQUESTS} requests): "
                f"p50 {percentile(timings, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(timings, 0.99) * 1000:.1f} ms"
            )
            delays: list[float] = []
            listeners = [asyncio.create_task(listen(http, project, delays)) for _ in range(CLIENTS)]
            await asyncio.sleep(1.0)  # let every client subscribe
            for n in range(EVENTS):
                async with db.session() as session:
                    await events.append(
                        session, project, EventKind.RUN, f"bench:{n}", {"n": n, "committed": 0.0}
                    )
                    await session.execute(
                        sa.text(
                            "UPDATE events SET data = jsonb_set(data, '{committed}', "
                            "to_jsonb(CAST(:t AS float8))) WHERE project_id = :p AND key = :k"
                        ),
                        {"t": time.time(), "p": project, "k": f"bench:{n}"},
                    )
                    await session.commit()
                await asyncio.sleep(0.02)
            await asyncio.wait_for(asyncio.gather(*listeners), 120)
            print(
                f"event delivery ({CLIENTS} clients x {EVENTS} events): "
                f"p50 {statistics.median(delays) * 1000:.1f} ms, "
                f"p99 {percentile(delays, 0.99) * 1000:.1f} ms"
            )
        await db.dispose()
    finally:
        await env.shutdown()
        await postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
