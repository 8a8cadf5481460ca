"""The preview gateway on real sockets: routing by host name, websockets, forwarding between
hosts, E2B-style targets, traffic records, and revival requests to the project's workflow.

Upstreams are small aiohttp servers standing in for a sandbox's dev server; PostgreSQL and the
Temporal server are real. The same paths with real sandboxes are in `test_revival.py`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from contract import project_workflow_id
from gateway.server import GatewayError, running_gateway
from runtime.preview_urls import preview_url
from runtime.processes import free_port
from runtime.settings import Settings
from storage import previews, queries
from storage.db import Database


def gateway_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "qai_preview_port": free_port(),
        "qai_preview_idle_seconds": 2,  # traffic is written every 0.5 s
        "qai_task_queue": f"gateway-{uuid.uuid4().hex[:8]}",  # no worker polls it
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def upstream(host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A dev-server stand-in: echoes the request's Host and Connection, and a websocket."""

    async def page(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "host": request.headers.get("Host"),
                "connection": request.headers.get("Connection"),
                "hop": request.headers.get("X-Qai-Gateway-Hop"),
                "path": request.path_qs,
            }
        )

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def new_project(db: Database) -> uuid.UUID:
    async with db.session() as session:
        project, _ = await queries.create_project(session, "gateway test", "a page")
    return project.id


async def set_row(
    db: Database, project_id: uuid.UUID, settings: Settings, target: str, **fields: str
) -> None:
    async with db.session() as session:
        await previews.record_live(
            session,
            project_id=project_id,
            sandbox_id=fields.get("sandbox_id", "sbx-000000000000"),
            host_id=fields.get("host_id", settings.host_id),
            host_address=fields.get("host_address", settings.host_address),
            target=target,
        )
        await session.commit()


def gateway_address(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.qai_preview_port}"


def host_header(settings: Settings, project_id: uuid.UUID | str) -> str:
    return f"{project_id}.preview.localhost:{settings.qai_preview_port}"


async def signals_of(env: WorkflowEnvironment, project_id: uuid.UUID) -> list[str]:
    handle = env.client.get_workflow_handle(project_workflow_id(project_id))
    history = await handle.fetch_history()
    return [
        event.workflow_execution_signaled_event_attributes.signal_name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


async def test_routes_by_host_name_relays_websockets_and_records_traffic(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    settings = gateway_settings()
    project_id = await new_project(clean_db)
    assert preview_url(settings, project_id) == (
        f"http://{project_id}.preview.localhost:{settings.qai_preview_port}/"
    )
    async with upstream() as target, running_gateway(settings, clean_db, workflow_env.client):
        await set_row(clean_db, project_id, settings, target)
        headers = {"Host": host_header(settings, project_id)}
        async with aiohttp.ClientSession() as http:
            # Keep-alive: several requests on one connection all reach the sandbox.
            for path in ("/", "/about?x=1"):
                async with http.get(gateway_address(settings) + path, headers=headers) as response:
                    assert response.status == 200
                    seen = await response.json()
                assert seen["host"] == headers["Host"]  # the dev server sees the public name
                assert seen["path"] == path
                assert seen["hop"] is None
            url = gateway_address(settings).replace("http", "ws") + "/ws"
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.send_str("hello")
                reply = await ws.receive(timeout=10)
                assert reply.data == "echo hello"
        async with asyncio.timeout(10):
            while True:
                async with clean_db.session() as session:
                    row = await previews.get(session, project_id)
                if row is not None and row.last_request_at is not None:
                    break
                await asyncio.sleep(0.1)


async def test_addresses_that_name_no_preview_get_404(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    settings = gateway_settings()
    async with (
        running_gateway(settings, clean_db, workflow_env.client),
        aiohttp.ClientSession() as http,
    ):
        for host in ("example.com", "localhost:8080", host_header(settings, uuid.uuid4())):
            async with http.get(gateway_address(settings), headers={"Host": host}) as response:
                assert response.status == 404, host
                text = await response.text()
                assert "No preview here" in text
                assert "Traceback" not in text and "127.0.0.1" not in text


async def test_another_hosts_sandbox_is_reached_through_that_hosts_gateway(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    owner = gateway_settings(qai_host_id="host-a")
    other = gateway_settings(qai_host_id="host-b", qai_task_queue=owner.qai_task_queue)
    project_id = await new_project(clean_db)
    async with (
        upstream() as target,
        running_gateway(owner, clean_db, workflow_env.client),
        running_gateway(other, clean_db, workflow_env.client),
        aiohttp.ClientSession() as http,
    ):
        await set_row(clean_db, project_id, owner, target)
        # The visitor's URL names the gateway it reached (host-b's port); host-b forwards.
        headers = {"Host": host_header(other, project_id)}
        async with http.get(gateway_address(other) + "/x", headers=headers) as response:
            assert response.status == 200
            seen = await response.json()
        assert seen == {
            "host": headers["Host"],
            "connection": seen["connection"],
            "hop": "1",
            "path": "/x",
        }


async def test_a_gone_host_or_hibernated_preview_asks_the_project_for_a_sandbox(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    settings = gateway_settings(qai_host_id="host-b")
    gone = free_port()  # nothing listens there: the owner host is gone
    project_id = await new_project(clean_db)
    hibernated = await new_project(clean_db)
    await set_row(
        clean_db,
        project_id,
        settings,
        "http://127.0.0.1:1",
        host_id="host-a",
        host_address=f"127.0.0.1:{gone}",
    )
    await set_row(clean_db, hibernated, settings, "http://127.0.0.1:1", sandbox_id="sbx-1")
    async with clean_db.session() as session:
        assert await previews.mark_hibernated(session, hibernated, "sbx-1")
        await session.commit()
    async with (
        running_gateway(settings, clean_db, workflow_env.client),
        aiohttp.ClientSession() as http,
    ):
        for project in (project_id, hibernated):
            headers = {"Host": host_header(settings, project)}
            async with http.get(gateway_address(settings), headers=headers) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                page = await response.text()
            assert "Starting your preview" in page and 'http-equiv="refresh"' in page
            assert "127.0.0.1" not in page
            # Asked once, however often the page refreshes meanwhile.
            async with http.get(gateway_address(settings), headers=headers) as response:
                assert response.status == 503
            assert await signals_of(workflow_env, project) == ["wake"]
    handle = workflow_env.client.get_workflow_handle(project_workflow_id(project_id))
    for project in (project_id, hibernated):
        await workflow_env.client.get_workflow_handle(project_workflow_id(project)).terminate()
    history = await handle.fetch_history()
    signaled = next(
        e.workflow_execution_signaled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )
    assert b"host-a" in signaled.input.payloads[0].data  # the workflow skips the gone host


async def test_a_remote_target_is_asked_under_its_own_host_name(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    """E2B's edge routes by Host: such targets get their own name, one request per connection."""
    settings = gateway_settings()
    project_id = await new_project(clean_db)
    async with (
        upstream("127.0.0.2") as target,
        running_gateway(settings, clean_db, workflow_env.client),
        aiohttp.ClientSession() as http,
    ):
        await set_row(clean_db, project_id, settings, target, host_id="elsewhere")
        headers = {"Host": host_header(settings, project_id)}
        async with http.get(gateway_address(settings) + "/p", headers=headers) as response:
            assert response.status == 200
            seen = await response.json()
        assert seen["host"] == "127.0.0.2"
        assert seen["connection"] == "close"
        assert seen["hop"] is None


@pytest.mark.parametrize("port_taken", [True])
async def test_a_taken_port_is_one_clear_error(
    clean_db: Database, workflow_env: WorkflowEnvironment, port_taken: bool
) -> None:

    settings = gateway_settings()
    async with running_gateway(settings, clean_db, workflow_env.client):
        with pytest.raises(
            GatewayError, match=f"could not listen on 127.0.0.1:{settings.qai_preview_port}"
        ):
            async with running_gateway(settings, clean_db, workflow_env.client):
                pass


async def test_a_sandbox_that_hangs_up_without_answering_gets_the_starting_page(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    """A sandbox stopped mid-request (hibernated, replaced by a restore) closes the connection
    unanswered: the visitor gets the self-refreshing page, not a browser error that never
    retries."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = gateway_settings()
    project_id = await new_project(clean_db)
    try:
        async with (
            running_gateway(settings, clean_db, workflow_env.client),
            aiohttp.ClientSession() as http,
        ):
            await set_row(clean_db, project_id, settings, f"http://127.0.0.1:{port}")
            headers = {"Host": host_header(settings, project_id)}
            async with http.get(gateway_address(settings), headers=headers) as response:
                assert response.status == 503
                assert "Starting your preview" in await response.text()
    finally:
        server.close()


async def test_a_preview_lost_again_after_a_revival_is_asked_for_at_once(
    clean_db: Database, workflow_env: WorkflowEnvironment
) -> None:
    settings = gateway_settings()
    project_id = await new_project(clean_db)
    headers = {"Host": host_header(settings, project_id)}

    async def hibernate() -> None:
        async with clean_db.session() as session:
            assert await previews.mark_hibernated(session, project_id, "sbx-000000000000")
            await session.commit()

    async with (
        upstream() as target,
        running_gateway(settings, clean_db, workflow_env.client),
        # A connection per request: the gateway routes a connection once, when it opens.
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        await set_row(clean_db, project_id, settings, target)
        await hibernate()
        async with http.get(gateway_address(settings), headers=headers) as response:
            assert response.status == 503
        await set_row(clean_db, project_id, settings, target)  # revived
        async with http.get(gateway_address(settings), headers=headers) as response:
            assert response.status == 200
        await hibernate()  # and lost again, seconds later
        async with http.get(gateway_address(settings), headers=headers) as response:
            assert response.status == 503
        assert await signals_of(workflow_env, project_id) == ["wake", "wake"]
    await workflow_env.client.get_workflow_handle(project_workflow_id(project_id)).terminate()
