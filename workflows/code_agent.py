"""One run of the code agent: answer one user message with a live preview, files and a summary.

The router loop lives here, in workflow code: call the model, run the tools it asked for, stop on
a fresh <task_summary> or at the iteration limit. Then the draft is checked, and the model fixes
what the checks found in a few rounds. Every side effect is an activity; history carries ids and
short results only, while transcripts and files stay in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.browser import BrowserActivities
    from activities.checks import CheckActivities
    from activities.llm import LlmActivities
    from activities.persistence import PersistenceActivities
    from agent.checks import fingerprint, report
    from agent.prompt import fallback_title
    from contract import (
        CANCELLED_TEXT,
        AgentRunInput,
        AgentRunResult,
        AgentTurnInput,
        AgentTurnResult,
        BrowserCheckInput,
        CheckFeedbackInput,
        CheckInput,
        CheckResult,
        ChecksReport,
        CheckStatus,
        LogCheckInput,
        ReplyStatus,
        RunProgress,
        SandboxLease,
        SavedReply,
        SaveReplyInput,
        ScreenshotInput,
        StartRunInput,
        StartRunResult,
        TitleInput,
    )
    from workflows.policies import HEARTBEAT, MODEL_RETRY, QUICK, SAVE_RETRY, failure_text
    from workflows.sandbox_session import SandboxKeptDying, SandboxSession
    from workflows.screenshots import SCREENSHOT_PATCH, take_screenshot
    from workflows.token_budget import BUDGET_PATCH, budget_error, budget_summary

TITLE_SECONDS = 20
"""The title activity's whole budget; the model call inside has its own, shorter timeout."""
BROWSER_CHECK_PATCH = "check-in-a-browser"
"""A fourth check opens the changed routes in Chromium."""
PARALLEL_CHECKS_PATCH = "parallel-checks"
"""Types and routes are checked at the same time (each takes one of the host's CPU slots)."""
FIX_ROUND_ITERATIONS = 6
"""Model turns a fix round may use, on top of QAI_MAX_ITERATIONS: fixing never ends a run."""


class FixRounds:
    """The fix rounds' budget: at most `attempts` rounds, and none after a round that left the
    same errors as the one before it."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.rounds = 0
        self._previous: str | None = None

    def another(self, checks: ChecksReport) -> bool:
        """Whether to give the model these errors for another round (and count it)."""
        if checks.status != CheckStatus.FAILED or self.rounds >= self.attempts:
            return False
        current = fingerprint(checks.errors)
        if current == self._previous:
            workflow.logger.info("a fix round left the same errors; stopping")
            return False
        self._previous = current
        self.rounds += 1
        return True


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
        self._iteration = 0
        self._sandbox: SandboxSession | None = None
        self._budget_reached: str | None = None
        self._checked_screenshot: uuid.UUID | None = None
        """The last browser check's screenshot of `/` (each round's replaces the last)."""

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
            saving = asyncio.ensure_future(self._save_error(input, CANCELLED_TEXT, cancelled=True))
            while True:
                try:
                    return await asyncio.shield(saving)
                except asyncio.CancelledError:
                    continue

    async def _run(self, input: AgentRunInput) -> AgentRunResult:
        self._progress.started_at = workflow.now()
        try:
            run: StartRunResult = await workflow.execute_activity_method(
                PersistenceActivities.start_run,
                StartRunInput(project_id=input.project_id, run_id=input.message_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=QUICK,
                summary="load the conversation",
            )
        except ActivityError as error:
            return await self._save_failure(input, error)

        self._progress.max_iterations = run.max_iterations
        self._progress.phase = "sandbox"
        self._sandbox = SandboxSession(input, run, self._progress)
        try:
            await self._sandbox.start()
        except ActivityError as error:
            if isinstance(error.cause, CancelledError):
                return await self._save_failure(input, error)
            text = f"The sandbox could not be started: {failure_text(error)}"
            return await self._save_error(input, text)

        try:
            summary, files_in_run = await self._agent_loop(input, run, run.max_iterations)
        except SandboxKeptDying as gave_up:
            self._sandbox.lost()
            return await self._save_error(input, str(gave_up))
        except ActivityError as error:
            return await self._save_failure(input, error)

        if summary is None and self._budget_reached is not None:
            if run.previous_files + files_in_run == 0 and not run.restorable:
                return await self._save_error(input, budget_error(self._budget_reached))
            summary = budget_summary(self._budget_reached)
        if summary is None:
            text = (
                f"The agent used all {run.max_iterations} of its steps without finishing the "
                "task. Try a smaller or more specific request."
            )
            return await self._save_error(input, text)
        if run.previous_files + files_in_run == 0 and not run.restorable:
            text = (
                "The agent finished without writing any files, so there is nothing to preview. "
                "Describe the app you want in more detail."
            )
            return await self._save_error(input, text)

        if self._budget_reached is not None:  # checks only: fixing would call the model
            self._progress.phase = "verifying"
            checks = report(await self._run_checks(input, run), 0)
        else:
            summary, checks = await self._verify(input, run, summary)
        screenshot_id = self._checked_screenshot  # `/` as the last browser check saw it
        if screenshot_id is None and "browser" in checks.ran and workflow.patched(SCREENSHOT_PATCH):
            assert self._sandbox is not None and self._sandbox.lease is not None
            lease = self._sandbox.lease
            screenshot_id = await take_screenshot(
                ScreenshotInput(
                    project_id=input.project_id,
                    sandbox_id=lease.sandbox_id,
                    key=str(input.message_id),
                ),
                lease.host_queue,
            )

        # The app is finished: nothing optional may lose it. The sandbox is checked first (and
        # replaced if it died), so the saved preview serves the app.
        self._progress.phase = "saving"
        try:
            await self._sandbox.keep_alive()
        except SandboxKeptDying as gave_up:
            workflow.logger.warning("saving the result without a live preview: %s", gave_up)
        except ActivityError as error:
            workflow.logger.warning("saving the result without a live preview: %s", error)
        title = await self._title(input, run, summary)
        saved = await self._save(
            input,
            ReplyStatus.RESULT,
            summary,
            title=title,
            checks=checks,
            screenshot_id=screenshot_id,
        )
        return self._result(saved, title)

    async def _agent_loop(
        self, input: AgentRunInput, run: StartRunResult, steps: int
    ) -> tuple[str | None, int]:
        """The router loop: model, then its tool calls, until a <task_summary> or `steps`
        model turns. Returns the summary (None when the steps ran out) and the files the run
        has changed."""
        assert self._sandbox is not None
        summary: str | None = None
        files_in_run = 0
        for _ in range(steps):
            self._iteration += 1
            iteration = self._iteration
            self._progress.iteration = iteration
            self._progress.phase = "thinking"
            self._progress.current_tool = None
            turn: AgentTurnResult = await workflow.execute_activity_method(
                LlmActivities.agent_turn,
                AgentTurnInput(
                    run_id=input.message_id,
                    iteration=iteration,
                    model=run.model,
                    max_iterations=run.max_iterations,
                ),
                start_to_close_timeout=timedelta(seconds=run.llm_timeout_seconds + 30),
                heartbeat_timeout=HEARTBEAT,
                retry_policy=MODEL_RETRY,
                summary=f"iteration {iteration}/{run.max_iterations}: model",
            )
            if turn.budget_reached is not None and workflow.patched(BUDGET_PATCH):
                self._budget_reached = turn.budget_reached
                break
            for call in turn.tool_calls:
                self._progress.phase = "tool"
                self._progress.current_tool = call.name
                result = await self._sandbox.run_tool(iteration, call)
                self._progress.tool_calls += 1
                files_in_run = max(files_in_run, result.files_in_run, result.workspace_files)
            summary = turn.summary
            if summary is not None:
                break
        self._progress.current_tool = None
        return summary, files_in_run

    async def _verify(
        self, input: AgentRunInput, run: StartRunResult, summary: str
    ) -> tuple[str, ChecksReport]:
        """Check the draft; on errors, give them to the model and let it fix them (`FixRounds`).
        Whatever remains is reported, never fatal: the user keeps the preview and can ask
        again."""
        fixes = FixRounds(run.fix_attempts)
        while True:
            self._progress.phase = "verifying"
            checks = report(await self._run_checks(input, run), fixes.rounds)
            if not fixes.another(checks):
                return summary, checks
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
                    summary=f"fix round {fixes.rounds}: report {len(checks.errors)} errors",
                )
                fixed, _ = await self._agent_loop(input, run, FIX_ROUND_ITERATIONS)
            except (ActivityError, SandboxKeptDying) as error:
                workflow.logger.warning("fix round %d ended early: %s", fixes.rounds, error)
                return summary, checks.model_copy(update={"rounds": fixes.rounds})
            if fixed is None:  # the round ran out of steps: keep the last summary
                return summary, checks.model_copy(update={"rounds": fixes.rounds})
            summary = fixed

    async def _run_checks(self, input: AgentRunInput, run: StartRunResult) -> list[CheckResult]:
        """Types and routes, then the log lines written while the routes were requested."""
        assert self._sandbox is not None and self._sandbox.lease is not None
        target = CheckInput(
            project_id=input.project_id,
            run_id=input.message_id,
            sandbox_id=self._sandbox.lease.sandbox_id,
            max_iterations=run.max_iterations,
        )
        if workflow.patched(PARALLEL_CHECKS_PATCH):
            types, routes = await asyncio.gather(
                self._check(CheckActivities.check_types, target, "types"),
                self._check(CheckActivities.check_routes, target, "routes"),
            )
        else:
            types = await self._check(CheckActivities.check_types, target, "types")
            routes = await self._check(CheckActivities.check_routes, target, "routes")
        log_input = LogCheckInput(
            sandbox_id=self._sandbox.lease.sandbox_id, since=routes.log_offset or 0
        )
        server_log = await self._check(CheckActivities.check_server_log, log_input, "server log")
        if not workflow.patched(BROWSER_CHECK_PATCH):
            return [types, routes, server_log]
        browser_input = BrowserCheckInput(
            project_id=input.project_id,
            run_id=input.message_id,
            sandbox_id=self._sandbox.lease.sandbox_id,
        )
        browser = await self._check(BrowserActivities.check_browser, browser_input, "browser")
        self._checked_screenshot = browser.screenshot_id
        return [types, routes, server_log, browser]

    async def _check(self, activity: Any, input: BaseModel, name: str) -> CheckResult:
        assert self._sandbox is not None
        try:
            return await workflow.execute_activity_method(
                activity,
                input,
                start_to_close_timeout=timedelta(minutes=6),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary=f"check: {name}",
                **self._sandbox.on_host(),
            )
        except ActivityError as error:
            workflow.logger.warning("check %s could not run: %s", name, failure_text(error))
            return CheckResult(
                name=name, status=CheckStatus.SKIPPED, reason="the check could not run"
            )

    async def _title(self, input: AgentRunInput, run: StartRunResult, summary: str) -> str:
        """A short title; any failure of the optional title call falls back to the prompt."""
        if self._budget_reached is not None:  # no more model calls
            return fallback_title(summary, run.prompt)
        try:
            return await workflow.execute_activity_method(
                LlmActivities.generate_title,
                TitleInput(
                    run_id=input.message_id,
                    model=run.title_model,
                    summary=summary,
                    prompt=run.prompt,
                    max_iterations=run.max_iterations,
                ),
                start_to_close_timeout=timedelta(seconds=TITLE_SECONDS),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="title",
            )
        except ActivityError as error:
            workflow.logger.warning("no title from the model: %s", failure_text(error))
            return fallback_title(summary, run.prompt)

    @property
    def _lease(self) -> SandboxLease | None:
        return self._sandbox.lease if self._sandbox else None

    async def _save(
        self,
        input: AgentRunInput,
        status: ReplyStatus,
        content: str,
        *,
        title: str | None = None,
        checks: ChecksReport | None = None,
        screenshot_id: uuid.UUID | None = None,
        cancelled: bool = False,
    ) -> SavedReply:
        lease = self._lease
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
                iterations=self._iteration,
                max_iterations=self._progress.max_iterations,
                checks=checks,
                screenshot_id=screenshot_id,
                cancelled=cancelled,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=SAVE_RETRY,
            summary=f"save {status.value}",
        )

    async def _save_failure(self, input: AgentRunInput, error: ActivityError) -> AgentRunResult:
        """End the run with the words of the activity that failed (a cancel included)."""
        cancelled = isinstance(error.cause, CancelledError)
        return await self._save_error(input, failure_text(error), cancelled=cancelled)

    async def _save_error(
        self, input: AgentRunInput, text: str, *, cancelled: bool = False
    ) -> AgentRunResult:
        self._progress.phase = "saving"
        workflow.logger.info("run ends in an error: %s", text)
        saved = await self._save(input, ReplyStatus.ERROR, text, cancelled=cancelled)
        return self._result(saved, None)

    def _result(self, saved: SavedReply, title: str | None) -> AgentRunResult:
        self._progress.phase = "done"
        lease = self._lease
        return AgentRunResult(
            status=saved.status,
            assistant_message_id=saved.message_id,
            content=saved.content,
            sandbox_id=lease.sandbox_id if lease else None,
            sandbox_url=lease.url if lease and saved.status == ReplyStatus.RESULT else None,
            title=title,
            iterations=self._iteration,
            sandbox_host_id=lease.host_id if lease else None,
            host_queue=lease.host_queue if lease else None,
        )
