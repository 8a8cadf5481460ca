"""A run's sandbox, in workflow code: get it, replace it when it dies, keep its preview alive.

Every activity on the sandbox goes to the task queue of the host holding it; a host that takes
none in time is gone, and counts as a sandbox that is gone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.sandbox import SandboxActivities
    from activities.tools import ToolActivities
    from contract import (
        RESTARTED_NOTE,
        AcquireSandboxInput,
        AgentRunInput,
        ExtendSandboxInput,
        RestoredWorkspace,
        RestoreWorkspaceInput,
        RunProgress,
        SandboxLease,
        StartRunResult,
        ToolCallInput,
        ToolCallRef,
        ToolCallResult,
    )
    from workflows.policies import HEARTBEAT, SANDBOX_RETRY, host_gone, on_host, sandbox_gone


class SandboxKeptDying(Exception):
    """The run replaced its sandbox as often as allowed and the new one died too."""


class SandboxSession:
    def __init__(self, input: AgentRunInput, run: StartRunResult, progress: RunProgress) -> None:
        self._input = input
        self._run = run
        self._progress = progress
        self.lease: SandboxLease | None = None
        self.replacements = 0

    def on_host(self) -> dict[str, Any]:
        """Options that send an activity on this sandbox to its host."""
        return on_host(self.lease.host_queue if self.lease else None)

    def lost(self) -> None:
        """The run ends without a sandbox to hand out."""
        self.lease = None

    async def start(self) -> SandboxLease:
        """The project's sandbox while it lives (asked of its host), else a new one that gets
        the project's workspace back."""
        try:
            self.lease = await self._acquire(self._input.sandbox_id)
            if self.lease.fresh and self._run.restorable:
                await self._restore()
        except ActivityError:
            self.lease = None
            raise
        return self.lease

    async def run_tool(self, iteration: int, call: ToolCallRef) -> ToolCallResult:
        """Run one tool call; if the sandbox died, replace it and run the call on the new one."""
        restarted: str | None = None
        while True:
            assert self.lease is not None
            try:
                return await workflow.execute_activity_method(
                    ToolActivities.run_tool,
                    ToolCallInput(
                        run_id=self._input.message_id,
                        sandbox_id=self.lease.sandbox_id,
                        iteration=iteration,
                        tool_call_id=call.id,
                        project_id=self._input.project_id,
                        max_iterations=self._run.max_iterations,
                        restarted=restarted,
                    ),
                    start_to_close_timeout=timedelta(minutes=6),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=SANDBOX_RETRY,
                    summary=f"iteration {iteration}: {call.name}",
                    **self.on_host(),
                )
            except ActivityError as error:
                if not sandbox_gone(error):
                    raise
                restarted = await self._replace()
                self._progress.phase = "tool"

    async def keep_alive(self) -> None:
        """Extend the preview's lifetime; a sandbox found dead is replaced and restored."""
        assert self.lease is not None
        try:
            await workflow.execute_activity_method(
                SandboxActivities.extend_sandbox,
                ExtendSandboxInput(
                    project_id=self._input.project_id,
                    sandbox_id=self.lease.sandbox_id,
                    run_id=self._input.message_id,
                    max_iterations=self._run.max_iterations,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SANDBOX_RETRY,
                summary="keep the preview alive",
                **self.on_host(),
            )
        except ActivityError as error:
            if not sandbox_gone(error):
                raise
            await self._replace()

    async def _replace(self) -> str:
        """A new sandbox with the workspace as of the last completed tool call; returns the
        note that tells the model its environment restarted."""
        if self.replacements >= self._run.max_sandbox_replacements:
            raise SandboxKeptDying(
                f"The sandbox stopped {self.replacements + 1} times during this run, so the run "
                "gave up. Everything up to the last completed step is saved; send your message "
                "again to continue."
            )
        self.replacements += 1
        self._progress.phase = "sandbox"
        workflow.logger.warning("the sandbox died; replacing it (%d)", self.replacements)
        self.lease = await self._acquire(None)
        restored = await self._restore()
        if restored.problem is None:
            return RESTARTED_NOTE
        return f"{RESTARTED_NOTE}\n{restored.problem}"

    async def _acquire(self, sandbox_id: str | None) -> SandboxLease:
        """`sandbox_id` while it lives (asked of its host), else a new one on any host."""
        options = on_host(self._input.host_queue) if sandbox_id else {}
        try:
            return await workflow.execute_activity_method(
                SandboxActivities.acquire_sandbox,
                AcquireSandboxInput(
                    project_id=self._input.project_id,
                    run_id=self._input.message_id,
                    sandbox_id=sandbox_id,
                    max_iterations=self._run.max_iterations,
                ),
                start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary="reuse sandbox" if sandbox_id else "create sandbox",
                **options,
            )
        except ActivityError as error:
            if not options or not host_gone(error):
                raise
            workflow.logger.warning("the sandbox's host is gone; starting one elsewhere")
            return await self._acquire(None)

    async def _restore(self) -> RestoredWorkspace:
        assert self.lease is not None
        return await workflow.execute_activity_method(
            SandboxActivities.restore_workspace,
            RestoreWorkspaceInput(
                project_id=self._input.project_id,
                run_id=self._input.message_id,
                sandbox_id=self.lease.sandbox_id,
            ),
            # npm install may run when the project changed its dependencies.
            start_to_close_timeout=timedelta(minutes=12),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=SANDBOX_RETRY,
            summary="restore the workspace",
            **self.on_host(),
        )
