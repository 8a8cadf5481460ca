"""The checks of a finished draft, one activity each so the Web UI names them.

Types (`tsc --noEmit` in the sandbox), routes (each route the run added or changed, requested
through the preview), and the dev server's log (errors it printed while the routes were
requested). A check that cannot run is `skipped` with its reason; it never fails the run.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractAsyncContextManager
from urllib.parse import urljoin, urlsplit

import httpx
from temporalio import activity

from activities.events import run_phase
from activities.heartbeat import heartbeating
from activities.sandbox_service import preview_port
from activities.services import Services
from activities.slots import cpu_slot
from agent.checks import (
    NEXT_ERROR_MARKER,
    SERVER_LOG,
    TSC_COMMAND,
    CheckIssue,
    CheckResult,
    CheckStatus,
    bounded,
    log_errors,
    parse_tsc,
    routes_of,
)
from contract import CheckInput, LogCheckInput
from runtime import metrics
from sandboxes.base import CommandFailedError, Sandbox, SandboxError, SandboxNotFoundError
from storage import snapshots
from storage.db import Database

ROUTE_TIMEOUT_SECONDS = 120.0
"""A route's first request compiles it: seconds on a fresh dev server. Bounds the whole request
(connect, headers, body, redirects), not each read: a route that drips bytes is cut too."""
ROUTE_MAX_BODY_BYTES = 5 * 1024 * 1024
"""A page's HTML is read up to here (enough to find Next.js's error page); more is cut."""
ROUTE_MAX_REDIRECTS = 5
"""Redirects followed within the preview's own origin; one to anywhere else is never followed."""
SERVER_START_POLL_SECONDS = 0.25
SOURCE_SUFFIXES = (".tsx", ".ts", ".jsx", ".js", ".mdx", ".css")


def _skipped(name: str, error: SandboxError) -> CheckResult:
    reason = (
        "the sandbox is gone"
        if isinstance(error, SandboxNotFoundError)
        else "the sandbox could not run it"
    )
    activity.logger.warning("check %s skipped: %s", name, error)
    return metrics.check_done(CheckResult(name=name, status=CheckStatus.SKIPPED, reason=reason))


class CheckActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="check_types")
    async def check_types(self, input: CheckInput) -> CheckResult:
        """`tsc --noEmit` over the whole project."""
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
        except SandboxError as error:
            return _skipped("types", error)
        # The first check of a round: the run is verifying its draft.
        key = f"verifying:{activity.info().activity_id}"
        await run_phase(
            self._services.db,
            input.run_id,
            "verifying",
            max_iterations=input.max_iterations,
            key=key,
        )
        try:
            async with heartbeating(), self._slot(input, "types"):
                return metrics.check_done(await run_tsc(sandbox))
        except SandboxError as error:
            return _skipped("types", error)

    @activity.defn(name="check_routes")
    async def check_routes(self, input: CheckInput) -> CheckResult:
        """Every route the run added or changed must answer 200 without Next.js's error page."""
        routes, dynamic = await changed_routes(self._services.db, input.project_id, input.run_id)
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            async with heartbeating(), self._slot(input, "routes"):
                result = await request_routes(sandbox, routes)
        except SandboxError as error:
            return _skipped("routes", error)
        if dynamic:
            activity.logger.info("dynamic routes not requested: %s", ", ".join(dynamic))
        return metrics.check_done(result)

    @activity.defn(name="check_server_log")
    async def check_server_log(self, input: LogCheckInput) -> CheckResult:
        """Errors the dev server printed since this round of checks began."""
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            return metrics.check_done(await read_server_log(sandbox, input.since))
        except SandboxError as error:
            return _skipped("server log", error)

    def _slot(self, input: CheckInput, step: str) -> AbstractAsyncContextManager[float]:
        """One of the host's check slots for this check (others wait their turn)."""
        return cpu_slot(
            self._services, input.run_id, "check", step, max_iterations=input.max_iterations
        )


async def changed_routes(
    db: Database, project_id: uuid.UUID, run_id: uuid.UUID
) -> tuple[list[str], list[str]]:
    """Routes of the pages this run added or changed; `/` too when other sources changed."""
    async with db.session() as session:
        now = await snapshots.latest(session, project_id, up_to_run=run_id)
        before = await snapshots.latest(session, project_id, up_to_run=run_id, before=True)
    if now is None:
        return [], []
    old = before.files if before else {}
    changed = [path for path, data in now.files.items() if old.get(path) != data]
    routes, dynamic = routes_of(changed)
    if any(path.endswith(SOURCE_SUFFIXES) for path in changed) and "/" not in routes:
        routes.insert(0, "/")
    return routes, dynamic


async def run_tsc(sandbox: Sandbox) -> CheckResult:
    """Type-check the project; tsc that cannot run at all makes the check `skipped`."""
    try:
        await sandbox.commands.run(TSC_COMMAND, timeout=300)
    except CommandFailedError as failed:
        issues = parse_tsc(failed.stdout + "\n" + failed.stderr)
        if issues:
            return CheckResult(name="types", status=CheckStatus.FAILED, issues=issues)
        return CheckResult(
            name="types",
            status=CheckStatus.SKIPPED,
            reason=f"tsc could not run (exit {failed.exit_code})",
        )
    return CheckResult(name="types", status=CheckStatus.PASSED)


async def request_routes(sandbox: Sandbox, routes: list[str]) -> CheckResult:
    """Each route must answer 200 without Next.js's error page; notes where the log stood."""
    offset = await _log_size(sandbox)
    if not routes:
        return CheckResult(
            name="routes",
            status=CheckStatus.SKIPPED,
            reason="the run changed no route",
            log_offset=offset,
        )
    base = sandbox.preview_url(preview_port())
    issues: list[CheckIssue] = []
    # Redirects by hand: a model-written route must not make the worker (root, host network)
    # request another address, such as a cloud metadata service or Temporal.
    async with httpx.AsyncClient(timeout=ROUTE_TIMEOUT_SECONDS, follow_redirects=False) as client:
        for route in routes:
            try:
                # The first answer may come from a compile that began before the run's last
                # write (the warm-up's, say); the second shows the files as they are.
                async with asyncio.timeout(ROUTE_TIMEOUT_SECONDS):
                    await _first_answer(client, base, route)
                async with asyncio.timeout(ROUTE_TIMEOUT_SECONDS):
                    status, body, problem = await _get_route(client, base, route)
            except (httpx.HTTPError, TimeoutError) as error:
                what = (
                    f"did not answer within {ROUTE_TIMEOUT_SECONDS:g} s"
                    if isinstance(error, httpx.TimeoutException | TimeoutError)
                    else "could not be reached"
                )
                issues.append(CheckIssue(check="routes", message=f"GET {route} {what}"))
                continue
            if problem:
                issues.append(CheckIssue(check="routes", message=f"GET {route} {problem}"))
            elif status != 200:
                message = f"GET {route} answered {status}"
                issues.append(CheckIssue(check="routes", message=message))
            elif NEXT_ERROR_MARKER in body:
                message = f"GET {route} rendered Next.js's error page"
                issues.append(CheckIssue(check="routes", message=message))
    status = CheckStatus.FAILED if issues else CheckStatus.PASSED
    return CheckResult(name="routes", status=status, issues=bounded(issues), log_offset=offset)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


async def _get_route(
    client: httpx.AsyncClient, base: str, route: str
) -> tuple[int, str, str | None]:
    """(status, body read up to the cap, problem): redirects followed only within the origin."""
    url = base + route
    for _ in range(ROUTE_MAX_REDIRECTS + 1):
        async with client.stream("GET", url) as response:
            if response.is_redirect:
                target = urljoin(url, response.headers.get("location", ""))
                if _origin(target) != _origin(base):
                    return response.status_code, "", "redirected away from the preview"
                url = target
                continue
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > ROUTE_MAX_BODY_BYTES:
                    limit = ROUTE_MAX_BODY_BYTES // (1024 * 1024)
                    return response.status_code, "", f"sent a body larger than {limit} MB"
            return response.status_code, body.decode("utf-8", "replace"), None
    return 0, "", f"redirected more than {ROUTE_MAX_REDIRECTS} times"


async def _first_answer(client: httpx.AsyncClient, base: str, route: str) -> None:
    """Request `route` once the dev server takes connections: a new sandbox's server may still
    be starting when a quick run (or a check that no longer waits behind tsc) asks. The first
    answer may come from a compile that began earlier; only the second one is judged."""
    while True:
        try:
            await _get_route(client, base, route)
            return
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            await asyncio.sleep(SERVER_START_POLL_SECONDS)


async def read_server_log(sandbox: Sandbox, since: int) -> CheckResult:
    """Error lines the dev server printed after byte `since` of its log."""
    try:
        result = await sandbox.commands.run(f"tail -c +{since + 1} {SERVER_LOG}", timeout=30)
    except CommandFailedError:
        return CheckResult(name="server log", status=CheckStatus.SKIPPED, reason="no server log")
    issues = log_errors(result.stdout)
    status = CheckStatus.FAILED if issues else CheckStatus.PASSED
    return CheckResult(name="server log", status=status, issues=issues)


async def _log_size(sandbox: Sandbox) -> int:
    try:
        result = await sandbox.commands.run(f"wc -c < {SERVER_LOG}", timeout=30)
    except CommandFailedError:
        return 0
    return int(result.stdout.strip() or 0)
