"""Prometheus metrics of every qai process, and the ways to serve them on `/metrics`.

One registry per process holds qai's own metrics; the Temporal SDK's runtime metrics (task
latencies, schedule-to-start, sticky cache) come from its Core runtime, which serves them on a
loopback port of its own (`temporal_runtime`); `metrics_text()` joins both into one page.

Labels stay bounded: models come from settings, tools and checks from fixed lists, routes are
route templates. No project id, message id or prompt is ever a label value.

Serving: `metrics_route` for a FastAPI/Starlette app, `metrics_app` (with `/healthz`) as a
standalone ASGI app, `serving_metrics` to run that app on a port (the worker's
QAI_METRICS_PORT). A new process (the preview gateway) observes the metrics defined here:
`SANDBOXES.labels(state="hibernated").set(n)`, `with SANDBOX_REVIVAL_SECONDS.time(): ...`,
`GATEWAY_REQUEST_SECONDS.labels(outcome=...).observe(s)`, and mounts `metrics_app()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from runtime.logs import get_logger
from runtime.processes import free_port

log = get_logger("qai.metrics")

disable_created_metrics()  # no `_created` series: half the page, and nothing graphs them

OTHER = "other"
"""The label value for anything outside a label's known set."""

# ------------------------------------------------------------------ runs (worker activities)

RUN_STATUSES = ("RESULT", "ERROR", "cancelled")

RUNS_STARTED = Counter("qai_runs_started", "Runs (answers to a user message) that started.")
RUNS_ENDED = Counter("qai_runs_ended", "Runs that ended, by status.", ["status"])
RUN_SECONDS = Histogram(
    "qai_run_duration_seconds",
    "From a run's first transcript entry to its saved reply.",
    ["status"],
    buckets=(10, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
RUN_ITERATIONS = Histogram(
    "qai_run_iterations",
    "Agent iterations (model calls) a finished run took.",
    ["status"],
    buckets=(1, 2, 3, 5, 8, 12, 15, 20, 30, 50, 100, 200),
)

# ------------------------------------------------------------------ model calls

MODEL_CALLS = Counter(
    "qai_model_calls",
    "Model calls, by model, purpose and outcome.",
    ["model", "purpose", "outcome"],
)
MODEL_CALL_SECONDS = Histogram(
    "qai_model_call_seconds",
    "Duration of a successful model call (streamed to the end).",
    ["model", "purpose"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
MODEL_TOKENS = Counter(
    "qai_model_tokens", "Tokens of model calls, by model and direction (in/out).", ["model", "dir"]
)

# ------------------------------------------------------------------ tools and checks

TOOL_OUTCOMES = ("ok", "failed", "error")
"""ok; failed: the tool ran and reported a failure to the model; error: the sandbox failed."""
TOOL_CALLS = Counter("qai_tool_calls", "Tool calls, by tool and outcome.", ["tool", "outcome"])
CHECK_NAMES = ("types", "routes", "server log")
CHECKS = Counter("qai_checks", "Check activities, by check and status.", ["check", "status"])
RUN_CHECKS = Counter(
    "qai_run_checks", "Runs' checks reports (on RESULT replies), by overall status.", ["status"]
)
CHECK_ROUNDS = Histogram(
    "qai_check_fix_rounds",
    "Fix rounds a run's checks gave the model.",
    buckets=(0, 1, 2, 3, 4, 5),
)

# ------------------------------------------------------------------ sandboxes and previews

SANDBOX_STATES = ("live", "pooled", "hibernated")
SANDBOXES = Gauge(
    "qai_sandboxes",
    "Sandboxes on this host: live (running, pool included), pooled (unclaimed warm pool "
    "members), hibernated (stopped by the preview gateway, revivable).",
    ["state"],
)
SANDBOX_CREATE_SECONDS = Histogram(
    "qai_sandbox_create_seconds",
    "Time to get a new sandbox for a run (a warm pool member or a fresh start).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
SANDBOX_REVIVAL_SECONDS = Histogram(
    "qai_sandbox_revival_seconds",
    "Time the preview gateway took to revive a hibernated sandbox.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "qai_gateway_request_seconds",
    "Preview gateway requests until answered or connected to the preview, by outcome: "
    "proxied, forwarded (to the holding host's gateway), reviving, not_found, error.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# ------------------------------------------------------------------ HTTP API

API_REQUEST_SECONDS = Histogram(
    "qai_api_request_seconds",
    "API requests until the response started, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SSE_CLIENTS = Gauge("qai_sse_clients", "Clients connected to an event stream.")
RATE_LIMITED = Counter("qai_rate_limit_refusals", "Submissions refused by QAI_RATE_LIMIT.")


def bounded(value: str, known: Iterable[str]) -> str:
    """`value` when it is one of `known`, else "other": label values never grow unbounded."""
    return value if value in set(known) else OTHER


# ------------------------------------------------------------------ observation helpers


class Stopwatch:
    """Seconds since it was made, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._start


@asynccontextmanager
async def timed(histogram: Histogram) -> AsyncIterator[None]:
    """Observe the block's duration when it completes without an exception."""
    watch = Stopwatch()
    yield
    histogram.observe(watch.seconds)


def model_call_done(
    model: str, purpose: str, watch: Stopwatch, tokens: dict[str, int | None]
) -> None:
    MODEL_CALLS.labels(model, purpose, "ok").inc()
    MODEL_CALL_SECONDS.labels(model, purpose).observe(watch.seconds)
    MODEL_TOKENS.labels(model, "in").inc(tokens.get("prompt_tokens") or 0)
    MODEL_TOKENS.labels(model, "out").inc(tokens.get("completion_tokens") or 0)


def model_call_failed(model: str, purpose: str) -> None:
    MODEL_CALLS.labels(model, purpose, "error").inc()


def tool_call(tool: str, known: Iterable[str], outcome: str) -> None:
    TOOL_CALLS.labels(bounded(tool, known), outcome).inc()


ResultT = TypeVar("ResultT")


def check_done(result: ResultT) -> ResultT:
    """Count a check's CheckResult (by name and status) and hand it back unchanged."""
    name, status = getattr(result, "name", OTHER), getattr(result, "status", OTHER)
    CHECKS.labels(bounded(name, CHECK_NAMES), str(status)).inc()
    return result


def run_ended(
    status: str, iterations: int, seconds: float | None, checks: Any | None = None
) -> None:
    """A saved reply. `checks` is the run's ChecksReport (status, rounds), if it ran checks."""
    status = bounded(status, RUN_STATUSES)
    RUNS_ENDED.labels(status).inc()
    if iterations > 0:
        RUN_ITERATIONS.labels(status).observe(iterations)
    if seconds is not None:
        RUN_SECONDS.labels(status).observe(seconds)
    if checks is not None:
        RUN_CHECKS.labels(str(checks.status)).inc()
        CHECK_ROUNDS.observe(checks.rounds)


def sandboxes_from(count: Callable[[], tuple[int, int]]) -> None:
    """Read live and pooled sandboxes from `count()` at each scrape (the worker's backend)."""
    SANDBOXES.labels("live").set_function(lambda: count()[0])
    SANDBOXES.labels("pooled").set_function(lambda: count()[1])


def _init_labels() -> None:
    """Known label values appear at 0 from the start, so rates work from the first scrape."""
    for status in RUN_STATUSES:
        RUNS_ENDED.labels(status)
    for state in SANDBOX_STATES:
        SANDBOXES.labels(state)


_init_labels()


# ------------------------------------------------------------------ the Temporal SDK's metrics

_temporal_metrics_address: str | None = None
_temporal_runtime: Runtime | None = None


def temporal_runtime() -> Runtime:
    """The process's one Temporal runtime, exporting the SDK's metrics on a loopback port.

    Created at the first call, which must come before any client connects (runtime/temporal.py
    passes it to every `Client.connect`). Durations are in seconds, like qai's own.
    """
    global _temporal_metrics_address, _temporal_runtime
    if _temporal_runtime is None:
        address = f"127.0.0.1:{free_port()}"
        _temporal_runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=address, durations_as_seconds=True)
            )
        )
        _temporal_metrics_address = address
    return _temporal_runtime


def _temporal_text() -> bytes:
    """The SDK's page (urllib, not httpx: httpx would log a line per scrape)."""
    if _temporal_metrics_address is None:
        return b""
    try:
        url = f"http://{_temporal_metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=2) as page:
            return bytes(page.read())
    except OSError as error:
        return f"# the Temporal SDK's metrics are unavailable: {type(error).__name__}\n".encode()


async def metrics_text() -> bytes:
    """qai's metrics, then the Temporal SDK's, in the Prometheus text format."""
    own = await asyncio.to_thread(_generate_latest, REGISTRY)
    return own + await asyncio.to_thread(_temporal_text)


async def metrics_route(_request: Request) -> Response:
    """`GET /metrics` for a Starlette or FastAPI app (`app.add_route("/metrics", ...)`)."""
    return Response(await metrics_text(), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------ API request latency


class RequestMetricsMiddleware:
    """Times each HTTP request until its response starts (an event stream's too), labelled
    with the route template that matched (`/api/projects/{project_id}`), never the path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = Stopwatch()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            API_REQUEST_SECONDS.labels(scope.get("method", "GET"), route, str(status)).observe(
                watch.seconds
            )

        async def timing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timing_send)
        except Exception:
            observe(500)
            raise


# ------------------------------------------------------------------ a standalone server

HealthCheck = Callable[[], Awaitable[bool]]
Refresh = Callable[[], Awaitable[None]]


async def refreshed(refresh: Refresh | None) -> None:
    """Run `refresh()`; a failure is logged and the gauges keep their last values."""
    if refresh is None:
        return
    try:
        await refresh()
    except Exception as error:
        log.warning("metrics not refreshed", error=str(error))


class MetricsServerError(RuntimeError):
    """The metrics port could not be bound; names the setting to change."""


def metrics_app(health: HealthCheck | None = None, refresh: Refresh | None = None) -> ASGIApp:
    """`/metrics`, and `/healthz` (200 when `health()` is true, else 503), as an ASGI app.

    `refresh()` runs before each `/metrics` page: it updates gauges read from elsewhere (the
    database's hibernated previews); when it fails, the page shows the last values.
    """
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def metrics_page(request: Request) -> Response:
        await refreshed(refresh)
        return await metrics_route(request)

    async def healthz(_request: Request) -> Response:
        ok = True if health is None else await health()
        return JSONResponse({"detail": "ok" if ok else "unhealthy"}, status_code=200 if ok else 503)

    return Starlette(
        routes=[Route("/metrics", metrics_page), Route("/healthz", healthz)],
    )


@asynccontextmanager
async def serving_metrics(
    host: str, port: int, health: HealthCheck | None = None, refresh: Refresh | None = None
) -> AsyncIterator[str]:
    """Serve `metrics_app(health, refresh)` for the block's duration; yields its base URL."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the embedding process owns its signals
            yield

    server = _Server(
        uvicorn.Config(
            metrics_app(health, refresh), host=host, port=port, log_level="warning", lifespan="off"
        )
    )
    refused = MetricsServerError(
        f"cannot serve metrics on {host}:{port} (is the port taken?); "
        "set QAI_METRICS_PORT to a free port, or 0 to turn them off"
    )

    async def serve() -> None:
        try:
            await server.serve()
        except (SystemExit, OSError):  # uvicorn exits when it cannot bind: not this process
            raise refused from None

    task = asyncio.create_task(serve(), name="metrics")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise refused
            await asyncio.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, MetricsServerError):
            await task
