"""The qai worker.

python worker.py          the worker alone, for production: connects to TEMPORAL_ADDRESS
python worker.py --dev    the whole local stack in the foreground: embedded PostgreSQL (unless
                          DATABASE_URL is set), migrations, the Temporal dev server with its
                          Web UI, and the worker; Ctrl-C, SIGTERM or SIGHUP stops all of it,
                          the sandboxes it started included
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.checks import CheckActivities
from activities.deletion import DeletionActivities
from activities.llm import LlmActivities
from activities.persistence import PersistenceActivities
from activities.previews import PreviewActivities
from activities.sandbox import SandboxActivities
from activities.sandbox_service import SandboxService
from activities.services import Services, open_services
from activities.tools import ToolActivities
from activities.versions import VersionActivities
from gateway.server import count_previews, running_gateway
from runtime import metrics
from runtime.interceptors import LogContextInterceptor
from runtime.logs import configure_logging, get_logger
from runtime.processes import stop_signals
from runtime.settings import SandboxBackendName, Settings, settings_or_exit
from runtime.temporal import connect_temporal, ensure_search_attributes
from workflows.code_agent import CodeAgentWorkflow
from workflows.project import ProjectWorkflow

log = get_logger("qai.worker")

WORKFLOWS: list[type] = [ProjectWorkflow, CodeAgentWorkflow]


def host_queue_name(task_queue: str, host_id: str) -> str:
    """The queue only this host polls: activities on its (local) sandboxes are sent there."""
    return f"{task_queue}-on-{host_id}"


def activities_for(services: Services, host_queue: str) -> list[Any]:
    """Every activity of the worker, bound to the shared clients."""
    sandboxes = SandboxService(services, host_queue)
    sandbox = SandboxActivities(services, sandboxes)
    previews = PreviewActivities(services, sandboxes)
    llm = LlmActivities(services)
    tools = ToolActivities(services)
    persistence = PersistenceActivities(services)
    versions = VersionActivities(services)
    deletion = DeletionActivities(services)
    checks = CheckActivities(services)
    return [
        sandbox.acquire_sandbox,
        sandbox.restore_workspace,
        sandbox.extend_sandbox,
        previews.start_preview,
        previews.watch_preview,
        llm.agent_turn,
        llm.generate_title,
        tools.run_tool,
        persistence.record_message,
        persistence.add_check_feedback,
        checks.check_types,
        checks.check_routes,
        checks.check_server_log,
        persistence.start_run,
        persistence.save_reply,
        versions.restore_version,
        deletion.delete_project,
    ]


class Workers:
    """This process's two pollers, run together: the shared task queue (workflows, and
    activities any host can do, like starting a sandbox) and this host's own queue (activities
    on the sandboxes it holds), as in Temporal's worker-specific task queues."""

    def __init__(self, client: Client, services: Services, *, task_queue: str | None = None):
        shared = task_queue or services.settings.qai_task_queue
        self.task_queue = shared
        self.host_queue = host_queue_name(shared, services.settings.host_id)
        activities = activities_for(services, self.host_queue)
        options: dict[str, Any] = {
            "interceptors": [LogContextInterceptor()],
            "max_concurrent_activities": 20,
        }
        self._workers = [
            Worker(
                client, task_queue=shared, workflows=WORKFLOWS, activities=activities, **options
            ),
            Worker(client, task_queue=self.host_queue, activities=activities, **options),
        ]
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Workers:
        async with AsyncExitStack() as stack:
            for worker in self._workers:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


def build_workers(client: Client, services: Services, *, task_queue: str | None = None) -> Workers:
    return Workers(client, services, task_queue=task_queue)


async def _prepare_sandboxes(settings: Settings) -> None:
    if settings.qai_sandbox_backend == SandboxBackendName.LOCAL:
        from sandboxes.template import ensure_template_stoppable

        log.info("checking the sandbox template (the first build takes a few minutes)")
        path = await ensure_template_stoppable(settings)
        log.info("sandbox template ready", path=str(path))


async def _serve_metrics(
    stack: AsyncExitStack, settings: Settings, services: Services, client: Client
) -> None:
    """`/metrics` and `/healthz` on QAI_METRICS_PORT (0: not served)."""
    if not settings.qai_metrics_port:
        return
    metrics.sandboxes_from(services.sandboxes.host_counts)

    async def healthy() -> bool:
        """The worker runs (this server stops with it) and Temporal answers."""
        try:
            async with asyncio.timeout(3.0):
                return await client.service_client.check_health()
        except Exception:
            return False

    url = await stack.enter_async_context(
        metrics.serving_metrics(
            settings.qai_metrics_host,
            settings.qai_metrics_port,
            healthy,
            refresh=lambda: count_previews(services.db, settings.host_id),
        )
    )
    log.info("metrics served", url=f"{url}/metrics")


async def serve(settings: Settings, *, dev: bool) -> None:
    """Run until SIGINT, SIGTERM or SIGHUP, then stop everything this process started.

    The first stop signal cancels whatever is running, start-up included, so each step stops
    what it started at once. Once stopping has begun, further signals are ignored: the cleanup
    is what leaves nothing running, so it must not be cut short.
    """
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    signalled: list[signal.Signals] = []
    cleaning_up = False

    def request_stop(sig: signal.Signals) -> None:
        if signalled or cleaning_up:
            log.info("already stopping", signal=sig.name)
            return
        signalled.append(sig)
        log.info("stopping", signal=sig.name)
        main_task.cancel()

    for sig in stop_signals():
        loop.add_signal_handler(sig, request_stop, sig)

    try:
        async with AsyncExitStack() as stack:
            try:
                if dev:
                    from runtime.localstack import LocalStack

                    local = await stack.enter_async_context(LocalStack(settings))
                    database_url, address = local.database_url, local.temporal_address
                else:
                    from storage.embedded import database_url_for

                    database_url = await stack.enter_async_context(database_url_for(settings))
                    address = settings.temporal_address
                await _prepare_sandboxes(settings)
                client = await (
                    connect_temporal(address, settings.temporal_namespace)
                    if dev
                    else connect_temporal(settings)
                )
                await ensure_search_attributes(client)
                services = await stack.enter_async_context(open_services(settings, database_url))
                if dev:  # a dev stop leaves nothing running; production sandboxes outlive it
                    stack.push_async_callback(services.sandboxes.kill_owned)
                workers = build_workers(client, services)
                gateway_url = await stack.enter_async_context(
                    running_gateway(settings, services.db, client)
                )
                async with workers:
                    await _serve_metrics(stack, settings, services, client)
                    if dev:
                        from api.server import running_api

                        api_url = await stack.enter_async_context(
                            running_api(settings, database_url, client)
                        )
                        print(
                            f"\nqai is running.\n  Temporal Web UI: {local.ui_url}\n"
                            f"  API:             {api_url}  (docs: {api_url}/docs)\n"
                            f"  Previews:        {gateway_url}\n"
                            f"  Temporal:        {address}\n"
                            f"  Task queue:      {settings.qai_task_queue}\n"
                            '  Try:             .venv/bin/python starter.py new "A todo app"\n'
                            "Press Ctrl-C to stop everything.\n",
                            flush=True,
                        )
                    log.info(
                        "worker started",
                        task_queue=workers.task_queue,
                        host_queue=workers.host_queue,
                        previews=gateway_url,
                        temporal=address,
                    )
                    await loop.create_future()  # until a stop signal cancels it
            finally:
                cleaning_up = True
    except asyncio.CancelledError:
        if not signalled:
            raise
        main_task.uncancel()
        log.info("stopped", signal=signalled[0].name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dev", action="store_true", help="run the whole local stack in the foreground"
    )
    args = parser.parse_args(argv)
    settings = settings_or_exit()
    configure_logging(settings.qai_log_format, settings.qai_log_level)
    from api.server import ApiExposedError, check_exposure
    from runtime.localstack import LOCAL_STACK_ERRORS
    from sandboxes.base import SandboxError
    from sandboxes.template import TemplateError

    try:
        if args.dev:
            check_exposure(settings)
        asyncio.run(serve(settings, dev=args.dev))
    except (
        *LOCAL_STACK_ERRORS,
        SandboxError,
        TemplateError,
        ApiExposedError,
        metrics.MetricsServerError,
    ) as error:
        print(f"qai: {error}", file=sys.stderr)
        return 1
    except ApplicationError as error:  # e.g. no model configured
        print(f"qai: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
