"""Preview figures: revival time (request -> app served), memory before and after hibernation,
and the gateway's overhead per request against the sandbox's own address.

    .venv/bin/python benchmarks/preview_bench.py [--requests 300] [--revivals 3]

A real stack in one process: embedded PostgreSQL in a temporary directory, Temporal's test
server, the scripted model over HTTP, a worker with a warm pool of one sandbox, and the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activities.services import Services, open_services  # noqa: E402
from gateway.server import running_gateway  # noqa: E402
from runtime.preview_urls import loopback_target  # noqa: E402
from runtime.processes import free_port  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from runtime.temporal import ensure_search_attributes  # noqa: E402
from sandboxes.local.cgroups import SandboxCgroups  # noqa: E402
from sandboxes.local.layout import Layout, cgroup_name, read_state, sandboxes_root  # noqa: E402
from sandboxes.local.pool import POOL_TEMPLATE  # noqa: E402
from scripted_llm import scripted_llm_server  # noqa: E402
from storage import previews  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from submission import submit_prompt, wait_for_reply  # noqa: E402
from worker import build_workers  # noqa: E402

MARKER = "Preview bench page"
PAGE = f"export default function Page() {{ return <h1>{MARKER}</h1>; }}\n"
SCRIPT = {
    "default": {
        "title": "Bench",
        "turns": [
            {
                "tool_calls": [
                    {
                        "name": "createOrUpdateFiles",
                        "arguments": {
                            "files": [
                                {"path": "app/page.tsx", "content": PAGE},
                                {"path": "public/bench.txt", "content": "ok\n"},
                            ]
                        },
                    }
                ]
            },
            {"content": "<task_summary>A page.</task_summary>"},
        ],
    }
}
IDLE_SECONDS = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sandbox_memory_mb(settings: Settings, sandbox_id: str) -> tuple[float, float]:
    """(cgroup memory incl. page cache, summed RSS of its processes) in MB."""
    layout = Layout(sandboxes_root(settings.data_dir) / sandbox_id)
    group = SandboxCgroups(cgroup_name(layout))
    usage = 0.0
    for directory in group.dirs:
        for name in ("memory.current", "memory.usage_in_bytes"):
            if (directory / name).exists():
                usage = int((directory / name).read_text()) / 2**20
    rss = 0.0
    for pid in group.pids():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
        except OSError:
            continue
    return usage, rss


async def served(url: str, limit: float = 120) -> float:
    """Seconds until the URL serves the bench page."""
    target, host = loopback_target(url)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() - started < limit:
            try:
                response = await client.get(target, headers={"Host": host or ""})
                if response.status_code == 200 and MARKER in response.text:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never served the page")


async def timed_get(client: httpx.AsyncClient | None, url: str, host: str | None) -> float:
    """Milliseconds for one GET; a new connection when `client` is None."""
    headers = {"Host": host} if host else {}
    own = client is None
    client = client or httpx.AsyncClient(timeout=30)
    try:
        started = time.perf_counter()
        response = await client.get(url, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        if own:
            await client.aclose()
    assert response.status_code == 200, response.status_code
    return elapsed


async def warm_pool(services: Services) -> None:
    """Until the pool holds a warm sandbox (the revival figure is with the warm pool)."""
    backend = services.sandboxes
    template = await backend.template(POOL_TEMPLATE)
    while not any(entry.warm for entry in backend.pool.entries(template)[0]):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def wait_state(db: Database, project_id: uuid.UUID, state: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        async with db.session() as session:
            row = await previews.get(session, project_id)
        if row is not None and row.state == state:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the preview never became {state}")


async def main(requests: int, revivals: int) -> None:
    with tempfile.TemporaryDirectory(prefix="qai-preview-bench-") as tmp:
        async with EmbeddedPostgres(Path(tmp) / "pg") as pg, scripted_llm_server(SCRIPT) as llm:
            await upgrade(pg.url)
            env = await WorkflowEnvironment.start_time_skipping(
                data_converter=pydantic_data_converter,
                test_server_existing_path=str(Path(sys.prefix) / "bin" / "temporal-test-server"),
            )
            await ensure_search_attributes(env.client)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                openai_api_key="bench",
                openai_base_url=llm.base_url,
                qai_model="scripted",
                qai_title_model="scripted",
                qai_sandbox_network="none",
                qai_sandbox_pool_size=1,
                qai_preview_port=free_port(),
                qai_preview_idle_seconds=IDLE_SECONDS,
                qai_task_queue=f"bench-{uuid.uuid4().hex[:6]}",
                qai_data_dir=ROOT / ".qai",
            )
            try:
                async with (
                    open_services(settings, pg.url) as services,
                    build_workers(env.client, services),
                    running_gateway(settings, services.db, env.client),
                ):
                    await run(settings, services, env, requests, revivals)
            finally:
                await env.shutdown()


async def run(
    settings: Settings,
    services: Services,
    env: WorkflowEnvironment,
    requests: int,
    revivals: int,
) -> None:
    db: Database = services.db
    print("waiting for the warm pool ...", flush=True)
    await warm_pool(services)
    submitted = await submit_prompt(env.client, db, settings, "A page for the benchmark")
    reply = await wait_for_reply(env.client, db, settings, submitted.message_id)
    assert reply.fragment is not None, reply.content
    url = reply.fragment.sandbox_url
    project_id = submitted.project_id
    await served(url)
    async with db.session() as session:
        row = await previews.get(session, project_id)
    assert row is not None

    # Gateway overhead: a static file (so the dev server's rendering is not the figure), asked
    # alternately of the sandbox's own address and of the gateway, so load drift hits both.
    target, host = loopback_target(url)
    for _attempt in range(20):  # warm-up, not measured: the first request of a path compiles
        try:
            await timed_get(None, target + "bench.txt", host)
            await timed_get(None, row.target + "/bench.txt", None)
            break
        except (httpx.HTTPError, AssertionError):
            await asyncio.sleep(0.5)
    for reuse in (True, False):
        direct: list[float] = []
        gateway: list[float] = []
        async with httpx.AsyncClient(timeout=30) as one, httpx.AsyncClient(timeout=30) as two:
            for _ in range(requests):
                direct.append(
                    await timed_get(one if reuse else None, row.target + "/bench.txt", None)
                )
                gateway.append(await timed_get(two if reuse else None, target + "bench.txt", host))
        kind = "one client, keep-alive" if reuse else "a new connection per request"
        print(
            f"GET /bench.txt ({kind}, {requests} each): direct p50 "
            f"{statistics.median(direct):.2f} ms, gateway p50 {statistics.median(gateway):.2f} ms "
            f"(p99 {percentile(gateway, 0.99):.2f} ms): overhead "
            f"{statistics.median(gateway) - statistics.median(direct):.2f} ms",
            flush=True,
        )

    # Memory before and after hibernation; then revival from hibernation, with the warm pool.
    revival_times = []
    for round_ in range(revivals):
        async with db.session() as session:
            row = await previews.get(session, project_id)
        assert row is not None
        usage, rss = sandbox_memory_mb(settings, row.sandbox_id)
        await wait_state(db, project_id, previews.PreviewState.HIBERNATED)
        after, after_rss = sandbox_memory_mb(settings, row.sandbox_id)
        print(
            f"round {round_ + 1}: live sandbox: cgroup {usage:.0f} MB, RSS {rss:.0f} MB; "
            f"hibernated: cgroup {after:.0f} MB, RSS {after_rss:.0f} MB",
            flush=True,
        )
        await warm_pool(services)
        seconds = await served(url)
        revival_times.append(seconds)
        print(f"round {round_ + 1}: revival from hibernation {seconds:.2f} s", flush=True)

    # Revival after the sandbox was SIGKILLed.
    await warm_pool(services)
    await served(url)  # live again if it hibernated while the pool warmed
    async with db.session() as session:
        row = await previews.get(session, project_id)
    assert row is not None
    layout = Layout(sandboxes_root(settings.data_dir) / row.sandbox_id)
    os.kill(read_state(layout.state)["supervisor"]["pid"], signal.SIGKILL)
    await asyncio.sleep(0.5)
    killed = await served(url)
    print(f"revival after SIGKILL: {killed:.2f} s")
    print(
        f"revival from hibernation, median of {len(revival_times)}: "
        f"{statistics.median(revival_times):.2f} s"
    )
    async with db.session() as session:
        row = await previews.get(session, project_id)
    if row is not None:
        await services.sandboxes.kill(row.sandbox_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--revivals", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.revivals))
