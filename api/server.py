"""Serving the API with uvicorn, alone (`python -m api`) or inside `worker.py --dev`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager

import uvicorn
from temporalio.client import Client

from api.app import create_app
from api.context import ApiContext
from api.events import EventHub
from api.limits import RateLimiter, StreamSlots
from runtime.settings import Settings
from storage.db import Database


class ApiExposedError(RuntimeError):
    """A non-loopback address without a token: anyone on the network could drive the agent."""


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond loopback without QAI_API_TOKEN."""
    host = settings.qai_api_host
    token = settings.qai_api_token.get_secret_value() if settings.qai_api_token else ""
    if token:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiExposedError(
            f"QAI_API_HOST={host} is reachable from other machines; set QAI_API_TOKEN "
            "or listen on 127.0.0.1"
        )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process that embeds it owns stopping."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@asynccontextmanager
async def running_api(
    settings: Settings,
    database_url: str,
    temporal: Client,
    *,
    heartbeat_seconds: float | None = None,
) -> AsyncIterator[str]:
    """Serve the API for the block's duration; yields its base URL (`http://host:port`)."""
    check_exposure(settings)
    db = Database(database_url)
    hub = (
        EventHub(db)
        if heartbeat_seconds is None
        else EventHub(db, heartbeat_seconds=heartbeat_seconds)
    )
    await hub.start()
    context = ApiContext(
        settings,
        db,
        temporal,
        hub,
        RateLimiter(*settings.rate_limit),
        actions=RateLimiter(*settings.action_rate_limit),
        streams=StreamSlots(settings.qai_sse_max_per_client, settings.qai_sse_max),
    )
    proxies = settings.trusted_proxies
    config = uvicorn.Config(
        create_app(context),
        host=settings.qai_api_host,
        port=settings.qai_api_port,
        # X-Forwarded-For/-Proto count only from QAI_TRUSTED_PROXIES (uvicorn's default would
        # believe any loopback peer, which lets a local client pick its rate-limit bucket).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="api")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ApiExposedError(
                    f"the API could not listen on {settings.qai_api_host}:{settings.qai_api_port}"
                )
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{settings.qai_api_host}:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await task
        await hub.stop()
        await db.dispose()
