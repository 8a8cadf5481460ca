"""Publishing figures: time to publish the demo app, memory of a published static app, and the
requests per second the gateway serves for the published page against the dev preview of the
same page.

    .venv/bin/python benchmarks/publish_bench.py [--seconds 10] [--concurrency 8]

A real stack in one process, as `preview_bench.py`: embedded PostgreSQL in a temporary
directory, Temporal's test server, the scripted model replaying the demo
(`scripted_llm/scripts/demo.json`), a worker, and the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
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

from activities.services import open_services  # noqa: E402
from gateway.server import running_gateway  # noqa: E402
from runtime.preview_urls import loopback_target  # noqa: E402
from runtime.processes import free_port  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from runtime.temporal import ensure_search_attributes  # noqa: E402
from scripted_llm import scripted_llm_server  # noqa: E402
from scripted_llm.script import load_script  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from submission import publish, submit_prompt, wait_for_publication, wait_for_reply  # noqa: E402
from worker import build_workers  # noqa: E402

DEMO_SCRIPT = ROOT / "scripted_llm" / "scripts" / "demo.json"


async def ok(url: str, limit: float = 180) -> None:
    target, host = loopback_target(url)
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(target, headers={"Host": host or ""})).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200")


async def rate(url: str, seconds: float, concurrency: int, keep_alive: bool) -> tuple[float, int]:
    """(requests per second answered 200, failures) for GET `url` from `concurrency` clients."""
    target, host = loopback_target(url)
    headers = {"Host": host or ""}
    done = 0
    failed = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done, failed
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            while time.monotonic() < deadline:
                try:
                    response = await http.get(target, headers=headers)
                    if response.status_code == 200:
                        done += 1
                    else:
                        failed += 1
                except httpx.HTTPError:
                    failed += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.monotonic() - started), failed


async def main(seconds: float, concurrency: int) -> None:
    script = load_script(DEMO_SCRIPT)
    with tempfile.TemporaryDirectory(prefix="qai-publish-bench-") as tmp:
        async with EmbeddedPostgres(Path(tmp) / "pg") as pg, scripted_llm_server(script) as llm:
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
                qai_preview_idle_seconds=0,
                qai_task_queue=f"bench-{uuid.uuid4().hex[:6]}",
                qai_data_dir=ROOT / ".qai",
            )
            try:
                async with (
                    open_services(settings, pg.url) as services,
                    build_workers(env.client, services),
                    running_gateway(settings, services.db, env.client),
                ):
                    db = services.db
                    prompt = "A kanban board with three columns"
                    submitted = await submit_prompt(env.client, db, settings, prompt)
                    reply = await wait_for_reply(env.client, db, settings, submitted.message_id)
                    assert reply.fragment is not None, reply.content
                    preview = reply.fragment.sandbox_url
                    await ok(preview)
                    started = time.monotonic()
                    request = await publish(env.client, db, settings, submitted.project_id)
                    row = await wait_for_publication(db, request.publication_id)
                    took = time.monotonic() - started
                    assert row.status == "live", row.error
                    print(
                        f"time to publish the demo app: {took:.1f} s (build "
                        f"{row.build_seconds:.1f} s; {row.files} files, {row.bytes / 1024:.0f} "
                        "KiB); a static app adds no process",
                        flush=True,
                    )
                    published = (
                        f"http://{submitted.project_id}.app.localhost:{settings.qai_preview_port}/"
                    )
                    await ok(published)
                    for keep_alive in (True, False):
                        kind = "keep-alive" if keep_alive else "a new connection per request"
                        for name, url in (("published", published), ("dev preview", preview)):
                            rps, failed = await rate(url, seconds, concurrency, keep_alive)
                            print(
                                f"GET / {name} ({concurrency} clients, {kind}): {rps:.0f} req/s"
                                + (f", {failed} failed" if failed else ""),
                                flush=True,
                            )
                    await services.sandboxes.kill_owned()
            finally:
                await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.concurrency))
