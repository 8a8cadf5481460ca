"""A project's preview between runs, in workflow code: watch the live one and hibernate it when
quiet, and start it again when the gateway asks (`wake`).

It runs inside the project's workflow, so it takes turns with the project's runs: a revival
never races a run for the sandbox, and a sandbox is never stopped under a running agent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.previews import PreviewActivities
    from contract import (
        PreviewWatch,
        ProjectState,
        SandboxLease,
        StartPreviewInput,
        WakePreview,
        WatchPreviewInput,
    )
    from workflows.policies import SANDBOX_RETRY, host_gone, on_host


class PreviewLifecycle:
    def __init__(self, project_id: uuid.UUID, state: ProjectState) -> None:
        self._project_id = project_id
        self._state = state
        self._wake: WakePreview | None = None
        self._watch_at: datetime | None = None
        """When to look whether the live preview went quiet; None: nothing live to watch."""

    def woken(self, request: WakePreview) -> None:
        """The gateway found no running sandbox; a request naming a gone host wins."""
        if self._wake is None or (request.unreachable_host and not self._wake.unreachable_host):
            self._wake = request

    def keep(self, lease: SandboxLease) -> None:
        """`lease` is the project's sandbox from now on."""
        self._state.sandbox_id = lease.sandbox_id
        self._state.sandbox_host_id = lease.host_id
        self._state.host_queue = lease.host_queue

    def begin(self) -> None:
        """A new run of the workflow (also after continue-as-new): watch a live sandbox."""
        if self._state.sandbox_id is not None:
            self._watch_at = workflow.now()

    def after_run(self) -> None:
        """A run (or restore) left its sandbox running: watch it from now on."""
        if self._state.sandbox_id is not None:
            self._watch_at = workflow.now()
            self._wake = None

    async def wait_for_work(self, idle: timedelta, has_work: Callable[[], bool]) -> bool:
        """Wait for work (`has_work`) or a wake-up, watching the live preview meanwhile.

        Returns True when the entity should close: idle for `idle`, with no live sandbox left
        to hibernate (a live preview keeps its entity open, so it is stopped once quiet).
        """

        def ready() -> bool:
            return has_work() or self._wake is not None

        close_at = workflow.now() + idle
        while True:
            wake_at = close_at if self._watch_at is None else min(close_at, self._watch_at)
            timeout = max(wake_at - workflow.now(), timedelta(seconds=1))
            try:
                await workflow.wait_condition(ready, timeout=timeout)
                return False
            except TimeoutError:
                pass
            if self._watch_at is not None and workflow.now() >= self._watch_at:
                await self._watch()
                if workflow.info().is_continue_as_new_suggested():
                    return False  # a preview watched for weeks: the run loop continues as new
                continue
            if self._watch_at is not None:
                close_at = self._watch_at
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            return not ready()

    async def take_wake(self, *, start: bool) -> None:
        """Forget the pending wake-up; with `start`, start the preview it asked for first."""
        wake, self._wake = self._wake, None
        if wake is not None and start:
            await self._start(wake)

    async def _watch(self) -> None:
        """Hibernate the quiet preview, or keep it alive and look again when it could be."""
        assert self._state.sandbox_id is not None
        try:
            watch: PreviewWatch = await workflow.execute_activity_method(
                PreviewActivities.watch_preview,
                WatchPreviewInput(project_id=self._project_id, sandbox_id=self._state.sandbox_id),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary="hibernate the preview if quiet",
                **on_host(self._state.host_queue),
            )
        except ActivityError as error:
            if host_gone(error):  # its host is gone, and its sandbox with it
                workflow.logger.warning("the preview's host is gone: %s", error.cause)
            else:
                workflow.logger.warning("could not watch the preview: %s", error.cause or error)
            self._watch_at = None
            return
        if watch.check_again_seconds is None:
            self._watch_at = None
        else:
            self._watch_at = workflow.now() + timedelta(seconds=watch.check_again_seconds)

    async def _start(self, wake: WakePreview) -> None:
        """Give the project a running sandbox with its latest workspace (the gateway asked)."""
        state = self._state
        lease: SandboxLease | None = None
        reachable = state.sandbox_host_id is None or state.sandbox_host_id != wake.unreachable_host
        try:
            if state.sandbox_id is not None and state.host_queue is not None and reachable:
                try:  # the sandbox may still run, or its host can start the new one
                    lease = await self._start_on(state.sandbox_id, state.host_queue)
                except ActivityError as error:
                    if not host_gone(error):
                        raise
                    workflow.logger.warning("the preview's host is gone; reviving elsewhere")
            if lease is None:
                lease = await self._start_on(None, None)
        except ActivityError as error:
            workflow.logger.warning("the preview could not start: %s", error.cause or error)
            return
        self.keep(lease)
        self._watch_at = workflow.now()

    async def _start_on(self, sandbox_id: str | None, host_queue: str | None) -> SandboxLease:
        return await workflow.execute_activity_method(
            PreviewActivities.start_preview,
            StartPreviewInput(project_id=self._project_id, sandbox_id=sandbox_id),
            start_to_close_timeout=timedelta(minutes=12),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=SANDBOX_RETRY,
            summary="start the preview",
            **on_host(host_queue),
        )
