"""The workflows' orchestration against stand-in activities, in seconds and without root.

Each stand-in is registered under the real activity's name (`@activity.defn(name=...)`), as
the SDK's samples do, and records what it was asked. The real activities are covered by the
sandbox tests; these cover the router loop, fix rounds, sandbox replacement, cancellation and
continue-as-new on Temporal's time-skipping test server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from contract import (
    CANCELLED_TEXT,
    RESTARTED_NOTE,
    AcquireSandboxInput,
    AgentTurnInput,
    AgentTurnResult,
    BrowserCheckInput,
    CancelRun,
    CheckFeedbackInput,
    CheckInput,
    CheckIssue,
    CheckResult,
    CheckStatus,
    DeleteProjectInput,
    EnqueueMessage,
    ExtendSandboxInput,
    LogCheckInput,
    PreviewWatch,
    ProjectInput,
    RecordedMessage,
    RecordMessageInput,
    ReplyStatus,
    RestoredVersion,
    RestoredWorkspace,
    RestoreVersion,
    RestoreVersionInput,
    RestoreWorkspaceInput,
    SandboxErrorType,
    SandboxLease,
    SavedReply,
    SaveReplyInput,
    ScreenshotInput,
    ScreenshotResult,
    StartPreviewInput,
    StartRunInput,
    StartRunResult,
    TitleInput,
    ToolCallInput,
    ToolCallRef,
    ToolCallResult,
    WatchPreviewInput,
    project_workflow_id,
)
from workflows.code_agent import CodeAgentWorkflow
from workflows.project import ProjectWorkflow

MAX_ITERATIONS = 5


def tool_turn(*names: str) -> AgentTurnResult:
    return AgentTurnResult(
        tool_calls=[ToolCallRef(id=f"call-{uuid.uuid4().hex[:6]}", name=n) for n in names],
        summary=None,
    )


def summary_turn(text: str = "Done.") -> AgentTurnResult:
    return AgentTurnResult(tool_calls=[], summary=text)


def failed_types(message: str) -> CheckResult:
    issue = CheckIssue(check="types", message=message, file="app/page.tsx", line=3)
    return CheckResult(name="types", status=CheckStatus.FAILED, issues=[issue])


class StandIns:
    """Every activity the workflows call, scripted per test; `calls` lists (name, input)."""

    def __init__(
        self,
        turns: list[AgentTurnResult],
        *,
        types: list[CheckResult] | None = None,
        tool_failures: list[Exception] | None = None,
        max_sandbox_replacements: int = 2,
        fix_attempts: int = 2,
        browser: CheckStatus = CheckStatus.PASSED,
        checked_shot: uuid.UUID | None = None,
    ) -> None:
        self.browser = browser
        self.checked_shot = checked_shot
        self.screenshot_id = uuid.uuid4()
        self.turns = list(turns)
        self.types = list(types or [])
        self.tool_failures = list(tool_failures or [])
        self.max_sandbox_replacements = max_sandbox_replacements
        self.fix_attempts = fix_attempts
        self.calls: list[tuple[str, Any]] = []
        self.sandboxes = 0
        self.saved: list[SaveReplyInput] = []
        self.turn_started = asyncio.Event()
        self.hold_turns = False
        self.release = asyncio.Event()
        self.runs: list[str | None] = []
        """The project workflow's run each message was sent to."""

    def named(self, name: str) -> list[Any]:
        return [payload for called, payload in self.calls if called == name]

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="record_message")
        async def record_message(input: RecordMessageInput) -> RecordedMessage:
            self.calls.append(("record_message", input))
            return RecordedMessage(answered=False)

        @activity.defn(name="start_run")
        async def start_run(input: StartRunInput) -> StartRunResult:
            self.calls.append(("start_run", input))
            return StartRunResult(
                model="scripted",
                title_model="scripted-mini",
                max_iterations=MAX_ITERATIONS,
                llm_timeout_seconds=30,
                prompt="Build a todo app",
                previous_files=0,
                fix_attempts=self.fix_attempts,
                restorable=True,
                max_sandbox_replacements=self.max_sandbox_replacements,
            )

        @activity.defn(name="acquire_sandbox")
        async def acquire_sandbox(input: AcquireSandboxInput) -> SandboxLease:
            self.calls.append(("acquire_sandbox", input))
            if input.sandbox_id:
                return SandboxLease(sandbox_id=input.sandbox_id, url="http://preview", fresh=False)
            self.sandboxes += 1
            return SandboxLease(
                sandbox_id=f"sbx-{self.sandboxes}", url="http://preview", fresh=True
            )

        @activity.defn(name="restore_workspace")
        async def restore_workspace(input: RestoreWorkspaceInput) -> RestoredWorkspace:
            self.calls.append(("restore_workspace", input))
            return RestoredWorkspace(files=1, deleted=0, installed=False)

        @activity.defn(name="extend_sandbox")
        async def extend_sandbox(input: ExtendSandboxInput) -> None:
            self.calls.append(("extend_sandbox", input))

        @activity.defn(name="agent_turn")
        async def agent_turn(input: AgentTurnInput) -> AgentTurnResult:
            self.calls.append(("agent_turn", input))
            if self.hold_turns:
                self.turn_started.set()
                await asyncio.wait_for(self.release.wait(), timeout=30)
            return self.turns.pop(0) if self.turns else tool_turn("terminal")

        @activity.defn(name="run_tool")
        async def run_tool(input: ToolCallInput) -> ToolCallResult:
            self.calls.append(("run_tool", input))
            if self.tool_failures:
                raise self.tool_failures.pop(0)
            return ToolCallResult(
                name="createOrUpdateFiles",
                ok=True,
                brief="wrote 1 file",
                files_in_run=1,
                workspace_files=1,
            )

        @activity.defn(name="check_types")
        async def check_types(input: CheckInput) -> CheckResult:
            self.calls.append(("check_types", input))
            if self.types:
                return self.types.pop(0)
            return CheckResult(name="types", status=CheckStatus.PASSED)

        @activity.defn(name="check_routes")
        async def check_routes(input: CheckInput) -> CheckResult:
            self.calls.append(("check_routes", input))
            return CheckResult(name="routes", status=CheckStatus.PASSED, log_offset=7)

        @activity.defn(name="check_server_log")
        async def check_server_log(input: LogCheckInput) -> CheckResult:
            self.calls.append(("check_server_log", input))
            return CheckResult(name="server log", status=CheckStatus.PASSED)

        @activity.defn(name="check_browser")
        async def check_browser(input: BrowserCheckInput) -> CheckResult:
            self.calls.append(("check_browser", input))
            reason = "no browser" if self.browser == CheckStatus.SKIPPED else None
            return CheckResult(
                name="browser", status=self.browser, reason=reason, screenshot_id=self.checked_shot
            )

        @activity.defn(name="take_screenshot")
        async def take_screenshot(input: ScreenshotInput) -> ScreenshotResult:
            self.calls.append(("take_screenshot", input))
            return ScreenshotResult(screenshot_id=self.screenshot_id)

        @activity.defn(name="restore_version")
        async def restore_version(input: RestoreVersionInput) -> RestoredVersion:
            self.calls.append(("restore_version", input))
            self.restored = RestoredVersion(message_id=uuid.uuid4(), title="Todo app", files=1)
            return self.restored

        @activity.defn(name="add_check_feedback")
        async def add_check_feedback(input: CheckFeedbackInput) -> None:
            self.calls.append(("add_check_feedback", input))

        @activity.defn(name="generate_title")
        async def generate_title(input: TitleInput) -> str:
            self.calls.append(("generate_title", input))
            return "Todo app"

        @activity.defn(name="save_reply")
        async def save_reply(input: SaveReplyInput) -> SavedReply:
            self.calls.append(("save_reply", input))
            self.saved.append(input)
            return SavedReply(
                message_id=uuid.uuid4(), status=input.status, content=input.content, files=1
            )

        @activity.defn(name="start_preview")
        async def start_preview(input: StartPreviewInput) -> SandboxLease:
            self.calls.append(("start_preview", input))
            return SandboxLease(sandbox_id="sbx-preview", url="http://preview", fresh=True)

        @activity.defn(name="watch_preview")
        async def watch_preview(input: WatchPreviewInput) -> PreviewWatch:
            self.calls.append(("watch_preview", input))
            return PreviewWatch(hibernated=False, check_again_seconds=None)

        @activity.defn(name="delete_project")
        async def delete_project(input: DeleteProjectInput) -> None:
            self.calls.append(("delete_project", input))

        return [
            record_message,
            start_run,
            acquire_sandbox,
            restore_workspace,
            extend_sandbox,
            agent_turn,
            run_tool,
            check_types,
            check_routes,
            check_server_log,
            check_browser,
            take_screenshot,
            restore_version,
            add_check_feedback,
            generate_title,
            save_reply,
            start_preview,
            watch_preview,
            delete_project,
        ]


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    from temporalio.contrib.pydantic import pydantic_data_converter

    from runtime.temporal import ensure_search_attributes
    from tests.workflows.conftest import TEST_SERVER

    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    await ensure_search_attributes(environment.client)
    try:
        yield environment
    finally:
        await environment.shutdown()


@asynccontextmanager
async def project(env: WorkflowEnvironment, stand_ins: StandIns, **input: Any):
    """A worker with the stand-ins, and a function that sends a message to a new project."""
    task_queue = f"orchestration-{uuid.uuid4().hex[:8]}"
    project_id = uuid.uuid4()
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[ProjectWorkflow, CodeAgentWorkflow],
        activities=stand_ins.activities(),
    ):

        async def send(prompt: str = "Build a todo app") -> uuid.UUID:
            message_id = uuid.uuid4()
            handle = await env.client.start_workflow(
                ProjectWorkflow.run,
                ProjectInput(project_id=project_id, **input),
                id=project_workflow_id(project_id),
                task_queue=task_queue,
                start_signal="enqueue",
                start_signal_args=[EnqueueMessage(message_id=message_id, prompt=prompt)],
            )
            stand_ins.runs.append(handle.result_run_id)
            return message_id

        yield send, project_id
        stand_ins.release.set()


async def replies(stand_ins: StandIns, count: int) -> list[SaveReplyInput]:
    async with asyncio.timeout(30):
        while len(stand_ins.saved) < count:
            await asyncio.sleep(0.05)
    return stand_ins.saved


async def test_the_router_loop_runs_tools_until_the_summary_then_checks_and_saves(env) -> None:
    stand_ins = StandIns([tool_turn("createOrUpdateFiles", "terminal"), summary_turn("Built.")])
    async with project(env, stand_ins) as (send, _):
        message_id = await send()
        (reply,) = await replies(stand_ins, 1)

    assert (reply.status, reply.content, reply.run_id) == (ReplyStatus.RESULT, "Built.", message_id)
    assert reply.iterations == 2 and reply.max_iterations == MAX_ITERATIONS
    assert reply.checks is not None and reply.checks.status == CheckStatus.PASSED
    assert reply.title == "Todo app" and not reply.cancelled
    order = [name for name, _ in stand_ins.calls if name not in ("record_message", "watch_preview")]
    order[7:9] = sorted(order[7:9])  # types and routes are checked at once, in either order
    assert order == [
        "start_run",
        "acquire_sandbox",
        "restore_workspace",  # a fresh sandbox of a restorable project gets its workspace
        "agent_turn",
        "run_tool",
        "run_tool",
        "agent_turn",
        "check_routes",
        "check_types",
        "check_server_log",
        "check_browser",
        "take_screenshot",
        "extend_sandbox",
        "generate_title",
        "save_reply",
    ]
    assert reply.checks.ran == ["types", "routes", "server_log", "browser"]
    assert reply.screenshot_id == stand_ins.screenshot_id  # the history carries its id only
    [shot] = stand_ins.named("take_screenshot")
    assert shot.key == str(message_id) and shot.fragment_message_id is None
    # The limit recorded by start_run travels in every input that reports progress.
    assert {t.max_iterations for t in stand_ins.named("agent_turn")} == {MAX_ITERATIONS}
    assert {t.max_iterations for t in stand_ins.named("run_tool")} == {MAX_ITERATIONS}
    assert stand_ins.named("check_server_log")[0].since == 7  # where the route check began


async def test_the_browser_checks_own_screenshot_of_the_home_page_is_kept(env) -> None:
    shot = uuid.uuid4()
    stand_ins = StandIns(
        [tool_turn("createOrUpdateFiles"), summary_turn("Built.")], checked_shot=shot
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)
    assert reply.screenshot_id == shot
    assert stand_ins.named("take_screenshot") == []  # no second visit of `/`


async def test_a_skipped_browser_check_takes_no_screenshot_and_fails_nothing(env) -> None:
    stand_ins = StandIns(
        [tool_turn("createOrUpdateFiles"), summary_turn("Built.")], browser=CheckStatus.SKIPPED
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)
    assert reply.status == ReplyStatus.RESULT
    assert reply.checks is not None and reply.checks.status == CheckStatus.PASSED
    assert reply.checks.ran == ["types", "routes", "server_log"]
    assert reply.checks.skipped == ["browser: no browser"]
    assert stand_ins.named("take_screenshot") == [] and reply.screenshot_id is None


async def test_the_iteration_limit_ends_in_an_error(env) -> None:
    stand_ins = StandIns([])  # the model never finishes
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)
    assert reply.status == ReplyStatus.ERROR
    assert f"all {MAX_ITERATIONS} of its steps" in reply.content
    assert len(stand_ins.named("agent_turn")) == MAX_ITERATIONS
    assert not stand_ins.named("check_types")


async def test_a_fix_round_gets_the_errors_and_its_own_budget(env) -> None:
    stand_ins = StandIns(
        [summary_turn("Draft."), tool_turn("createOrUpdateFiles"), summary_turn("Fixed.")],
        types=[failed_types("Type 'string' is not assignable to type 'number'.")],
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)

    assert (reply.status, reply.content) == (ReplyStatus.RESULT, "Fixed.")
    assert reply.checks is not None
    assert (reply.checks.status, reply.checks.rounds) == (CheckStatus.PASSED, 1)
    (feedback,) = stand_ins.named("add_check_feedback")
    assert feedback.iteration == 2  # read by the next model turn
    assert "not assignable" in feedback.errors[0].message
    assert [t.iteration for t in stand_ins.named("agent_turn")] == [1, 2, 3]
    assert len(stand_ins.named("check_types")) == 2


async def test_the_same_errors_twice_end_the_fixing_and_are_reported(env) -> None:
    same = failed_types("Cannot find name 'x'.")
    stand_ins = StandIns(
        [summary_turn("Draft."), summary_turn("Tried.")], types=[same, same], fix_attempts=3
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)

    # One round was tried; it left the same errors, so no second round was spent.
    assert reply.status == ReplyStatus.RESULT and reply.content == "Tried."
    assert reply.checks is not None
    assert (reply.checks.status, reply.checks.rounds) == (CheckStatus.FAILED, 1)
    assert len(stand_ins.named("add_check_feedback")) == 1


async def test_a_sandbox_that_dies_is_replaced_and_the_call_runs_again(env) -> None:
    gone = ApplicationError("The sandbox is gone.", type=SandboxErrorType.GONE, non_retryable=True)
    stand_ins = StandIns(
        [tool_turn("createOrUpdateFiles"), summary_turn("Built.")], tool_failures=[gone]
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)

    assert reply.status == ReplyStatus.RESULT
    first, second = stand_ins.named("run_tool")
    assert (first.sandbox_id, second.sandbox_id) == ("sbx-1", "sbx-2")
    assert first.restarted is None and second.restarted == RESTARTED_NOTE
    assert first.tool_call_id == second.tool_call_id
    assert [r.sandbox_id for r in stand_ins.named("restore_workspace")] == ["sbx-1", "sbx-2"]


async def test_a_sandbox_that_keeps_dying_ends_the_run_in_words(env) -> None:
    def gone() -> ApplicationError:
        return ApplicationError("gone", type=SandboxErrorType.GONE, non_retryable=True)

    stand_ins = StandIns(
        [tool_turn("terminal")], tool_failures=[gone(), gone()], max_sandbox_replacements=1
    )
    async with project(env, stand_ins) as (send, _):
        await send()
        (reply,) = await replies(stand_ins, 1)
    assert reply.status == ReplyStatus.ERROR
    assert "stopped 2 times" in reply.content
    assert reply.sandbox_url is None


async def test_cancel_saves_a_cancelled_error_reply(env) -> None:
    stand_ins = StandIns([tool_turn("terminal")])
    stand_ins.hold_turns = True
    async with project(env, stand_ins) as (send, project_id):
        message_id = await send()
        await asyncio.wait_for(stand_ins.turn_started.wait(), timeout=30)
        handle = env.client.get_workflow_handle(project_workflow_id(project_id))
        await handle.signal(ProjectWorkflow.cancel, CancelRun(message_id=message_id))
        (reply,) = await replies(stand_ins, 1)

    assert (reply.status, reply.content, reply.cancelled) == (
        ReplyStatus.ERROR,
        CANCELLED_TEXT,
        True,
    )
    assert not stand_ins.named("run_tool")


async def test_a_restored_version_gets_its_screenshot(env) -> None:
    stand_ins = StandIns([summary_turn("One.")])
    async with project(env, stand_ins) as (send, project_id):
        await send("first")
        await replies(stand_ins, 1)
        handle = env.client.get_workflow_handle(project_workflow_id(project_id))
        restore = RestoreVersion(message_id=uuid.uuid4(), fragment_id=uuid.uuid4())
        await handle.signal(ProjectWorkflow.restore, restore)
        async with asyncio.timeout(30):
            while len(stand_ins.named("take_screenshot")) < 2:  # the run's, then the restore's
                await asyncio.sleep(0.05)
    shot = stand_ins.named("take_screenshot")[1]
    assert shot.key == f"restore-{restore.message_id}"
    assert shot.fragment_message_id == stand_ins.restored.message_id  # the restored fragment
    assert shot.sandbox_id == stand_ins.named("restore_version")[0].sandbox_id


async def test_the_project_continues_as_new_with_its_state(env) -> None:
    stand_ins = StandIns([summary_turn("One."), summary_turn("Two.")])
    async with project(env, stand_ins, continue_after=1) as (send, project_id):
        await send("first")
        await replies(stand_ins, 1)
        handle = env.client.get_workflow_handle(project_workflow_id(project_id))
        async with asyncio.timeout(30):  # the entity continues as new once it is idle
            while (await handle.describe()).run_id == stand_ins.runs[0]:
                await asyncio.sleep(0.1)
        await send("second")
        await replies(stand_ins, 2)

    first, second = stand_ins.named("acquire_sandbox")
    assert first.sandbox_id is None
    assert second.sandbox_id == "sbx-1"  # carried across continue-as-new in the state
    assert len(stand_ins.named("restore_workspace")) == 1  # the live sandbox was reused
