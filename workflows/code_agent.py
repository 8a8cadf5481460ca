"""One run of the code agent: answer one user message with a live preview, files and a summary.

The router loop lives here, in workflow code: call the model, run the tools it asked for, stop on
a fresh <task_summary> or at the iteration limit. Every side effect is an activity; history
carries ids and short results only, while transcripts and files stay in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as StepTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.checks import CheckActivities, CheckInput, LogCheckInput
    from activities.errors import SANDBOX_GONE
    from activities.llm import (
        AgentTurnInput,
        AgentTurnResult,
        LlmActivities,
        TitleInput,
        ToolCallRef,
    )
    from activities.persistence import (
        CheckFeedbackInput,
        PersistenceActivities,
        ReplyStatus,
        SavedReply,
        SaveReplyInput,
        StartRunInput,
        StartRunResult,
    )
    from activities.sandbox import (
        AcquireSandboxInput,
        ExtendSandboxInput,
        HydrateSandboxInput,
        RestoredWorkspace,
        RestoreWorkspaceInput,
        SandboxActivities,
        SandboxLease,
    )
    from activities.tools import RESTARTED_NOTE, ToolActivities, ToolCallInput, ToolCallResult
    from agent.checks import CheckResult, ChecksReport, CheckStatus, fingerprint, report
    from agent.prompt import fallback_title


class AgentRunInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    """The user message to answer; also the run's id in the transcript store."""
    sandbox_id: str | None = None
    sandbox_task_queue: str | None = None
    """The task queue of the host holding `sandbox_id`."""


class AgentRunResult(BaseModel):
    status: ReplyStatus
    assistant_message_id: uuid.UUID
    content: str
    sandbox_id: str | None
    sandbox_url: str | None
    title: str | None
    iterations: int
    sandbox_host_id: str | None = None
    sandbox_task_queue: str | None = None


class RunProgress(BaseModel):
    phase: str
    iteration: int
    max_iterations: int
    current_tool: str | None
    tool_calls: int
    started_at: datetime | None


QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
)
# A worker that dies mid-activity is noticed within this, and the activity retried elsewhere.
HEARTBEAT = timedelta(seconds=15)
SANDBOX_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)
TITLE_SECONDS = 20
"""The title activity's whole budget; the model call inside has its own, shorter timeout."""

# Changes to the commands a run issues; runs started before them replay the old way.
REPLACE_SANDBOX_PATCH = "workspace-snapshots"
"""Snapshots restore a new sandbox, and a sandbox that dies mid-run is replaced."""
OPTIONAL_STEPS_PATCH = "optional-steps-never-fail"
CHECKS_PATCH = "check-the-draft"
"""A summary is accepted only after the draft's checks, with rounds to fix what they find."""
PARALLEL_CHECKS_PATCH = "parallel-checks"
"""Types and routes are checked at the same time (each takes one of the host's CPU slots)."""
FIX_ROUND_ITERATIONS = 6
"""Iterations a fix round may use, on top of QAI_MAX_ITERATIONS: fixing never ends a run."""
"""The preview is checked before the RESULT is saved; the title can only fall back."""


HOST_QUEUES_PATCH = "host-task-queues"
"""Activities on a sandbox run on the task queue of the host holding it."""
HOST_WAIT = timedelta(seconds=20)
"""How long a host's queue may hold an activity: longer, and no worker polls it (the host is
gone, with its sandboxes), so the sandbox is treated as gone and replaced elsewhere."""


def on_host(task_queue: str | None) -> dict[str, Any]:
    """Options that send an activity to a sandbox's host (none for leases without one)."""
    if task_queue is None:
        return {}
    return {"task_queue": task_queue, "schedule_to_start_timeout": HOST_WAIT}


def host_gone(error: ActivityError) -> bool:
    """No worker of the sandbox's host took the activity in time."""
    cause = error.cause
    return isinstance(cause, StepTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


CANCELLED_TEXT = "Cancelled. Everything the agent wrote so far is kept in the project."


class SandboxKeptDying(Exception):
    """The run replaced its sandbox as often as allowed and the new one died too."""


def _sandbox_gone(error: ActivityError) -> bool:
    cause = error.cause
    return (isinstance(cause, ApplicationError) and cause.type == SANDBOX_GONE) or host_gone(error)


def _failure_text(error: ActivityError) -> str:
    """What went wrong, in the words of the activity that classified it."""
    cause = error.cause
    if isinstance(cause, CancelledError):  # the run was cancelled while the step ran
        return CANCELLED_TEXT
    if isinstance(cause, ApplicationError) and cause.message:
        return cause.message
    if isinstance(cause, StepTimeoutError):
        return "A step of the run timed out repeatedly."
    return "An internal step failed repeatedly."


@workflow.defn
class CodeAgentWorkflow:
    def __init__(self) -> None:
        self._progress = RunProgress(
            phase="starting",
            iteration=0,
            max_iterations=0,
            current_tool=None,
            tool_calls=0,
            started_at=None,
        )
        self._replacements = 0
        self._iteration = 0
        self._lease: SandboxLease | None = None
        self._hosted = False

    def _on_host(self, lease: SandboxLease | None = None) -> dict[str, Any]:
        """Send an activity on the run's sandbox to that sandbox's host."""
        lease = lease or self._lease
        if not self._hosted or lease is None:
            return {}
        return on_host(lease.task_queue)

    @workflow.query
    def progress(self) -> RunProgress:
        return self._progress

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        try:
            return await self._run(input)
        except asyncio.CancelledError:
            # Cancelled on request (the project's `cancel`): the run ends as an ERROR and keeps
            # its sandbox, whose workspace is already snapshotted after every tool call. The
            # save is shielded, so a second cancel request cannot leave the message unanswered.
            saving = asyncio.ensure_future(
                self._save_error(input, self._lease, CANCELLED_TEXT, self._progress.iteration)
            )
            while True:
                try:
                    return await asyncio.shield(saving)
                except asyncio.CancelledError:
                    continue

    async def _run(self, input: AgentRunInput) -> AgentRunResult:
        self._progress.started_at = workflow.now()
        self._hosted = workflow.patched(HOST_QUEUES_PATCH)
        try:
            run = await workflow.execute_activity_method(
                PersistenceActivities.start_run,
                StartRunInput(project_id=input.project_id, run_id=input.message_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
                summary="load the conversation",
            )
        except ActivityError as error:
            return await self._save_error(input, None, _failure_text(error), 0)

        self._progress.max_iterations = run.max_iterations
        self._progress.phase = "sandbox"
        try:
            lease = await self._sandbox(input, run)
        except ActivityError as error:
            text = _failure_text(error)
            if not isinstance(error.cause, CancelledError):
                text = f"The sandbox could not be started: {text}"
            return await self._save_error(input, None, text, 0)

        self._lease = lease
        self._replacements = 0
        try:
            summary, files_in_run = await self._agent_loop(input, run, run.max_iterations)
        except SandboxKeptDying as gave_up:
            return await self._save_error(input, None, str(gave_up), self._iteration)
        except ActivityError as error:
            return await self._save_error(input, self._lease, _failure_text(error), self._iteration)
        lease, iteration = self._lease, self._iteration

        self._progress.current_tool = None
        if summary is None:
            text = (
                f"The agent used all {run.max_iterations} of its steps without finishing the "
                "task. Try a smaller or more specific request."
            )
            return await self._save_error(input, lease, text, iteration)
        if run.previous_files + files_in_run == 0 and not run.restorable:
            text = (
                "The agent finished without writing any files, so there is nothing to preview. "
                "Describe the app you want in more detail."
            )
            return await self._save_error(input, lease, text, iteration)

        checks = None
        if workflow.patched(CHECKS_PATCH):
            summary, checks = await self._verify(input, run, summary)
            lease, iteration = self._lease, self._iteration

        self._progress.phase = "saving"
        if not workflow.patched(OPTIONAL_STEPS_PATCH):  # runs from before this change
            title = await self._title(input, run, summary, may_fail=True)
            saved = await self._save(
                input, lease, ReplyStatus.RESULT, summary, iteration, title=title
            )
            await self._extend(input, lease)
            return self._result(saved, lease, title, iteration)
        # The app is finished: nothing optional may lose it. The sandbox is checked first (and
        # replaced if it died), so the saved preview serves the app.
        try:
            lease = await self._keep_alive(input, run, lease)
        except SandboxKeptDying as gave_up:
            workflow.logger.warning("saving the result without a live preview: %s", gave_up)
        except ActivityError as error:
            workflow.logger.warning("saving the result without a live preview: %s", error)
        title = await self._title(input, run, summary, may_fail=False)
        saved = await self._save(
            input, lease, ReplyStatus.RESULT, summary, iteration, title=title, checks=checks
        )
        return self._result(saved, lease, title, iteration)

    async def _agent_loop(
        self, input: AgentRunInput, run: StartRunResult, limit: int
    ) -> tuple[str | None, int]:
        """The router loop: model, then its tool calls, until a <task_summary> or `limit`.

        Returns the summary (None at the limit) and the files the run has changed; the
        iteration and the (possibly replaced) sandbox stay on `self`, also when it raises.
        """
        summary: str | None = None
        files_in_run = 0
        while self._iteration < limit and summary is None:
            self._iteration += 1
            iteration = self._iteration
            self._progress.iteration = iteration
            self._progress.phase = "thinking"
            self._progress.current_tool = None
            turn: AgentTurnResult = await workflow.execute_activity_method(
                LlmActivities.agent_turn,
                AgentTurnInput(run_id=input.message_id, iteration=iteration, model=run.model),
                start_to_close_timeout=timedelta(seconds=run.llm_timeout_seconds + 30),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=MODEL_RETRY,
                summary=f"iteration {iteration}/{run.max_iterations}: model",
            )
            for call in turn.tool_calls:
                self._progress.phase = "tool"
                self._progress.current_tool = call.name
                result, self._lease = await self._run_tool(input, run, self._lease, iteration, call)
                self._progress.tool_calls += 1
                files_in_run = max(files_in_run, result.files_in_run, result.workspace_files)
            summary = turn.summary
        self._progress.current_tool = None
        return summary, files_in_run

    async def _verify(
        self, input: AgentRunInput, run: StartRunResult, summary: str
    ) -> tuple[str, ChecksReport]:
        """Check the draft; on errors, give them to the model and let it fix them, in at most
        `fix_attempts` rounds, stopping early when a round leaves the same errors. Whatever
        remains is reported, never fatal: the user keeps the preview and can ask again."""
        rounds = 0
        previous: str | None = None
        while True:
            self._progress.phase = "verifying"
            checks = report(await self._run_checks(input), rounds)
            if checks.status != CheckStatus.FAILED or rounds >= run.fix_attempts:
                return summary, checks
            current = fingerprint(checks.errors)
            if current == previous:
                workflow.logger.info("a fix round left the same errors; stopping")
                return summary, checks
            previous = current
            rounds += 1
            try:
                await workflow.execute_activity_method(
                    PersistenceActivities.add_check_feedback,
                    CheckFeedbackInput(
                        run_id=input.message_id,
                        iteration=self._iteration + 1,
                        errors=checks.errors,
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=QUICK,
                    summary=f"fix round {rounds}: report {len(checks.errors)} errors",
                )
                fixed, _ = await self._agent_loop(
                    input, run, self._iteration + FIX_ROUND_ITERATIONS
                )
            except (ActivityError, SandboxKeptDying) as error:
                workflow.logger.warning("fix round %d ended early: %s", rounds, error)
                return summary, checks.model_copy(update={"rounds": rounds})
            if fixed is None:  # the round ran out of steps: keep the last summary
                return summary, checks.model_copy(update={"rounds": rounds})
            summary = fixed

    async def _run_checks(self, input: AgentRunInput) -> list[CheckResult]:
        """Types and routes, then the log lines written while the routes were requested."""
        target = CheckInput(
            project_id=input.project_id,
            run_id=input.message_id,
            sandbox_id=self._lease.sandbox_id,
        )
        if workflow.patched(PARALLEL_CHECKS_PATCH):
            types, routes = await asyncio.gather(
                self._check(CheckActivities.check_types, target, "types"),
                self._check(CheckActivities.check_routes, target, "routes"),
            )
        else:
            types = await self._check(CheckActivities.check_types, target, "types")
            routes = await self._check(CheckActivities.check_routes, target, "routes")
        log_input = LogCheckInput(sandbox_id=self._lease.sandbox_id, since=routes.log_offset or 0)
        server_log = await self._check(CheckActivities.check_server_log, log_input, "server log")
        return [types, routes, server_log]

    async def _check(self, activity: Any, input: BaseModel, name: str) -> CheckResult:
        try:
            return await workflow.execute_activity_method(
                activity,
                input,
                start_to_close_timeout=timedelta(minutes=6),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary=f"check: {name}",
                **self._on_host(),
            )
        except ActivityError as error:
            workflow.logger.warning("check %s could not run: %s", name, _failure_text(error))
            return CheckResult(
                name=name, status=CheckStatus.SKIPPED, reason="the check could not run"
            )

    async def _run_tool(
        self,
        input: AgentRunInput,
        run: StartRunResult,
        lease: SandboxLease,
        iteration: int,
        call: ToolCallRef,
    ) -> tuple[ToolCallResult, SandboxLease]:
        """Run one tool call; if the sandbox died, replace it and run the call on the new one."""
        restarted: str | None = None
        while True:
            try:
                result: ToolCallResult = await workflow.execute_activity_method(
                    ToolActivities.run_tool,
                    ToolCallInput(
                        run_id=input.message_id,
                        sandbox_id=lease.sandbox_id,
                        iteration=iteration,
                        tool_call_id=call.id,
                        project_id=input.project_id,
                        restarted=restarted,
                    ),
                    start_to_close_timeout=timedelta(minutes=6),
                    heartbeat_timeout=HEARTBEAT,
                    retry_policy=SANDBOX_RETRY,
                    summary=f"iteration {iteration}: {call.name}",
                    **self._on_host(lease),
                )
                return result, lease
            except ActivityError as error:
                if not _sandbox_gone(error) or not workflow.patched(REPLACE_SANDBOX_PATCH):
                    raise
                lease, restarted = await self._replace(input, run)
                self._progress.phase = "tool"

    async def _replace(self, input: AgentRunInput, run: StartRunResult) -> tuple[SandboxLease, str]:
        """A new sandbox with the workspace as of the last completed tool call, and the note
        that tells the model its environment restarted."""
        if self._replacements >= run.max_sandbox_replacements:
            raise SandboxKeptDying(
                f"The sandbox stopped {self._replacements + 1} times during this run, so the run "
                "gave up. Everything up to the last completed step is saved; send your message "
                "again to continue."
            )
        self._replacements += 1
        self._progress.phase = "sandbox"
        workflow.logger.warning("the sandbox died; replacing it (%d)", self._replacements)
        lease = await self._acquire(input, sandbox_id=None)
        restored = await self._restore(input, lease)
        if restored.problem is None:
            return lease, RESTARTED_NOTE
        return lease, f"{RESTARTED_NOTE}\n{restored.problem}"

    async def _keep_alive(
        self, input: AgentRunInput, run: StartRunResult, lease: SandboxLease
    ) -> SandboxLease:
        """Extend the preview's lifetime; a sandbox found dead is replaced and restored."""
        try:
            await workflow.execute_activity_method(
                SandboxActivities.extend_sandbox,
                ExtendSandboxInput(
                    project_id=input.project_id,
                    sandbox_id=lease.sandbox_id,
                    run_id=input.message_id,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SANDBOX_RETRY,
                summary="keep the preview alive",
                **self._on_host(lease),
            )
        except ActivityError as error:
            if not _sandbox_gone(error):
                raise
            lease, _ = await self._replace(input, run)
        return lease

    async def _title(
        self, input: AgentRunInput, run: StartRunResult, summary: str, *, may_fail: bool
    ) -> str:
        """A short title; any failure of the optional title call falls back to the prompt."""
        try:
            return await workflow.execute_activity_method(
                LlmActivities.generate_title,
                TitleInput(
                    run_id=input.message_id,
                    model=run.title_model,
                    summary=summary,
                    prompt=run.prompt,
                ),
                start_to_close_timeout=timedelta(seconds=60 if may_fail else TITLE_SECONDS),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="title",
            )
        except ActivityError as error:
            if may_fail:
                raise
            workflow.logger.warning("no title from the model: %s", _failure_text(error))
            return fallback_title(summary, run.prompt)

    async def _sandbox(self, input: AgentRunInput, run: StartRunResult) -> SandboxLease:
        lease = await self._acquire(input, sandbox_id=input.sandbox_id)
        if not lease.fresh:
            return lease
        if workflow.patched(REPLACE_SANDBOX_PATCH):
            if run.restorable:
                await self._restore(input, lease)
        elif run.previous_files:
            await workflow.execute_activity_method(
                SandboxActivities.hydrate_sandbox,
                HydrateSandboxInput(
                    project_id=input.project_id,
                    run_id=input.message_id,
                    sandbox_id=lease.sandbox_id,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=SANDBOX_RETRY,
                summary=f"restore {run.previous_files} files",
            )
        return lease

    async def _acquire(self, input: AgentRunInput, sandbox_id: str | None) -> SandboxLease:
        """The sandbox `sandbox_id` while it lives (asked of its host), else a new one on any
        host; a host that is gone counts as a sandbox that is gone."""
        options: dict[str, Any] = {}
        if sandbox_id and self._hosted:
            options = on_host(input.sandbox_task_queue)
        try:
            self._lease = await workflow.execute_activity_method(
                SandboxActivities.acquire_sandbox,
                AcquireSandboxInput(
                    project_id=input.project_id, run_id=input.message_id, sandbox_id=sandbox_id
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
            return await self._acquire(input, sandbox_id=None)
        return self._lease

    async def _restore(self, input: AgentRunInput, lease: SandboxLease) -> RestoredWorkspace:
        return await workflow.execute_activity_method(
            SandboxActivities.restore_workspace,
            RestoreWorkspaceInput(
                project_id=input.project_id, run_id=input.message_id, sandbox_id=lease.sandbox_id
            ),
            # npm install may run when the project changed its dependencies.
            start_to_close_timeout=timedelta(minutes=12),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=SANDBOX_RETRY,
            summary="restore the workspace",
            **self._on_host(lease),
        )

    async def _extend(self, input: AgentRunInput, lease: SandboxLease) -> None:
        try:
            await workflow.execute_activity_method(
                SandboxActivities.extend_sandbox,
                ExtendSandboxInput(project_id=input.project_id, sandbox_id=lease.sandbox_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=SANDBOX_RETRY,
                summary="keep the preview alive",
            )
        except ActivityError as error:
            workflow.logger.warning("could not extend the sandbox: %s", _failure_text(error))

    async def _save(
        self,
        input: AgentRunInput,
        lease: SandboxLease | None,
        status: ReplyStatus,
        content: str,
        iterations: int,
        title: str | None = None,
        checks: ChecksReport | None = None,
    ) -> SavedReply:
        return await workflow.execute_activity_method(
            PersistenceActivities.save_reply,
            SaveReplyInput(
                project_id=input.project_id,
                run_id=input.message_id,
                workflow_id=workflow.info().workflow_id,
                status=status,
                content=content,
                title=title,
                sandbox_url=lease.url if lease else None,
                iterations=iterations,
                checks=checks,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=40,
            ),
            summary=f"save {status.value}",
        )

    async def _save_error(
        self, input: AgentRunInput, lease: SandboxLease | None, text: str, iterations: int
    ) -> AgentRunResult:
        self._progress.phase = "saving"
        workflow.logger.info("run ends in an error: %s", text)
        saved = await self._save(input, lease, ReplyStatus.ERROR, text, iterations)
        return self._result(saved, lease, None, iterations)

    def _result(
        self, saved: SavedReply, lease: SandboxLease | None, title: str | None, iterations: int
    ) -> AgentRunResult:
        self._progress.phase = "done"
        return AgentRunResult(
            status=saved.status,
            assistant_message_id=saved.message_id,
            content=saved.content,
            sandbox_id=lease.sandbox_id if lease else None,
            sandbox_url=lease.url if lease and saved.status == ReplyStatus.RESULT else None,
            title=title,
            iterations=iterations,
            sandbox_host_id=lease.host_id if lease else None,
            sandbox_task_queue=lease.task_queue if lease else None,
        )
