"""One run of the code agent: answer one user message with a live preview, files and a summary.

The router loop lives here, in workflow code: call the model, run the tools it asked for, stop on
a fresh <task_summary> or at the iteration limit. Every side effect is an activity; history
carries ids and short results only, while transcripts and files stay in PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as StepTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.llm import AgentTurnInput, AgentTurnResult, LlmActivities, TitleInput
    from activities.persistence import (
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
        SandboxActivities,
        SandboxLease,
    )
    from activities.tools import ToolActivities, ToolCallInput, ToolCallResult


class AgentRunInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    """The user message to answer; also the run's id in the transcript store."""
    sandbox_id: str | None = None


class AgentRunResult(BaseModel):
    status: ReplyStatus
    assistant_message_id: uuid.UUID
    content: str
    sandbox_id: str | None
    sandbox_url: str | None
    title: str | None
    iterations: int


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


def _failure_text(error: ActivityError) -> str:
    """What went wrong, in the words of the activity that classified it."""
    cause = error.cause
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

    @workflow.query
    def progress(self) -> RunProgress:
        return self._progress

    @workflow.run
    async def run(self, input: AgentRunInput) -> AgentRunResult:
        self._progress.started_at = workflow.now()
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
            text = f"The sandbox could not be started: {_failure_text(error)}"
            return await self._save_error(input, None, text, 0)

        summary: str | None = None
        files_in_run = 0
        iteration = 0
        try:
            while iteration < run.max_iterations and summary is None:
                iteration += 1
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
                    result: ToolCallResult = await workflow.execute_activity_method(
                        ToolActivities.run_tool,
                        ToolCallInput(
                            run_id=input.message_id,
                            sandbox_id=lease.sandbox_id,
                            iteration=iteration,
                            tool_call_id=call.id,
                        ),
                        start_to_close_timeout=timedelta(minutes=6),
                        heartbeat_timeout=HEARTBEAT,
                        retry_policy=SANDBOX_RETRY,
                        summary=f"iteration {iteration}: {call.name}",
                    )
                    self._progress.tool_calls += 1
                    files_in_run = max(files_in_run, result.files_in_run)
                summary = turn.summary
        except ActivityError as error:
            return await self._save_error(input, lease, _failure_text(error), iteration)

        self._progress.current_tool = None
        if summary is None:
            text = (
                f"The agent used all {run.max_iterations} of its steps without finishing the "
                "task. Try a smaller or more specific request."
            )
            return await self._save_error(input, lease, text, iteration)
        if run.previous_files + files_in_run == 0:
            text = (
                "The agent finished without writing any files, so there is nothing to preview. "
                "Describe the app you want in more detail."
            )
            return await self._save_error(input, lease, text, iteration)

        self._progress.phase = "saving"
        title = await workflow.execute_activity_method(
            LlmActivities.generate_title,
            TitleInput(
                run_id=input.message_id, model=run.title_model, summary=summary, prompt=run.prompt
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=2),
            summary="title",
        )
        saved = await self._save(input, lease, ReplyStatus.RESULT, summary, iteration, title=title)
        await self._extend(input, lease)
        return self._result(saved, lease, title, iteration)

    async def _sandbox(self, input: AgentRunInput, run: StartRunResult) -> SandboxLease:
        lease: SandboxLease = await workflow.execute_activity_method(
            SandboxActivities.acquire_sandbox,
            AcquireSandboxInput(
                project_id=input.project_id, run_id=input.message_id, sandbox_id=input.sandbox_id
            ),
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=SANDBOX_RETRY,
            summary="reuse sandbox" if input.sandbox_id else "create sandbox",
        )
        if lease.fresh and run.previous_files:
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
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=20),
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
        )
