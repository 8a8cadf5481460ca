"""The preview gateway's `/metrics`: its requests by outcome, and this host's hibernated
previews read from PostgreSQL at each scrape (real sockets, PostgreSQL and Temporal)."""

from __future__ import annotations

import aiohttp
from temporalio.testing import WorkflowEnvironment

from gateway.server import running_gateway
from storage import previews
from storage.db import Database
from tests.metrics.test_metrics_run import parse, value
from tests.previews.test_gateway import (
    gateway_address,
    gateway_settings,
    host_header,
    new_project,
    set_row,
    upstream,
)


async def test_gateway_metrics(clean_db: Database, workflow_env: WorkflowEnvironment) -> None:
    settings = gateway_settings()
    live, hibernated = await new_project(clean_db), await new_project(clean_db)
    await set_row(clean_db, hibernated, settings, "http://127.0.0.1:1", sandbox_id="sbx-1")
    async with clean_db.session() as session:
        assert await previews.mark_hibernated(session, hibernated, "sbx-1")
        await session.commit()

    async with (
        upstream() as target,
        running_gateway(settings, clean_db, workflow_env.client),
        # One connection per request: the gateway relays a connection after its first request.
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        await set_row(clean_db, live, settings, target)
        base = gateway_address(settings)

        async def scrape() -> dict:
            async with http.get(f"{base}/metrics") as response:  # Host: the gateway's own
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                return parse(await response.text())

        before = await scrape()
        assert value(before, "qai_sandboxes", state="hibernated") == 1
        for project, status in ((live, 200), (hibernated, 503), ("nobody", 404)):
            headers = {"Host": host_header(settings, project)}
            async with http.get(base, headers=headers) as response:
                assert response.status == status
        after = await scrape()

    def moved(outcome: str) -> float:
        name = "qai_gateway_request_seconds_count"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (moved("proxied"), moved("reviving"), moved("not_found")) == (1, 1, 1)
    assert not any(str(live) in "".join(dict(labels).values()) for _, labels in after)
