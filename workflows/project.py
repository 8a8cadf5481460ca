"""The project entity: one long-lived workflow per project that answers its messages in order.

Clients submit a message with signal-with-start (`submission.py`): the signal is durable the
moment the server has it, with no worker running, and the workflow itself writes the USER row
from the id the client chose, idempotently. So a client that dies right after submitting loses
nothing, and a message arriving while the entity closes after idle is still answered (the close
is retried with the signal in it). Runs happen one at a time, each as a `CodeAgentWorkflow`
child, so two quick messages never race on the sandbox or on the conversation summary, and the
sandbox is reused between them while it lives. Every message gets a reply: if a run fails for
any reason, this workflow saves an ERROR reply that says so.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.browser import BrowserActivities, ScreenshotInput
    from activities.deletion import DeleteProjectInput, DeletionActivities
    from activities.persistence import (
        PersistenceActivities,
        RecordedMessage,
        RecordMessageInput,
        ReplyStatus,
        SaveReplyInput,
    )
    from activities.previews import (
        PreviewActivities,
        PreviewWatch,
        StartPreviewInput,
        WatchPreviewInput,
    )
    from activities.sandbox import AcquireSandboxInput, SandboxActivities, SandboxLease
    from activities.versions import RestoredVersion, RestoreVersionInput, VersionActivities
    from workflows.code_agent import (
        CANCELLED_TEXT,
        SANDBOX_RETRY,
        AgentRunInput,
        AgentRunResult,
        CodeAgentWorkflow,
        host_gone,
        on_host,
    )

PROJECT_ID = SearchAttributeKey.for_keyword("QaiProjectId")


SAVE_FAILED_RUN_PATCH = "save-reply-of-failed-run"
PREVIEWS_PATCH = "preview-lifecycle"
RESTORE_SCREENSHOT_PATCH = "restore-screenshot"
"""A restored version is photographed too (best effort: a restore never fails for it)."""
"""Previews revive on request and hibernate when quiet; sandbox work runs on its host."""


def project_workflow_id(project_id: uuid.UUID | str) -> str:
    return f"project-{project_id}"


def agent_run_workflow_id(message_id: uuid.UUID | str) -> str:
    return f"agent-run-{message_id}"


def project_search_attributes(project_id: uuid.UUID | str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(PROJECT_ID, str(project_id))])


class ProjectInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str | None = None
    sandbox_host_id: str | None = None
    sandbox_task_queue: str | None = None
    """The host holding `sandbox_id`, and its task queue (carried across continue-as-new)."""
    idle_timeout_seconds: int = Field(default=1800, ge=1)
    """With no message for this long the entity ends; the next message starts it again."""
    continue_after: int = Field(default=100, ge=1)
    """Messages answered before continuing as new, which keeps each run's history short."""


class SubmitMessage(BaseModel):
    """The `submit` update of clients from before signal-with-start (they wrote the row)."""

    message_id: uuid.UUID


class EnqueueMessage(BaseModel):
    """A message to answer. The workflow writes its USER row under `message_id`, once."""

    message_id: uuid.UUID
    prompt: str = Field(min_length=1, max_length=10_000)
    new_project_name: str | None = None
    """Set for the first message of a new project: the project row is created with it."""


class CancelRun(BaseModel):
    """Cancel the running message: it ends as an ERROR and keeps what it wrote."""

    message_id: uuid.UUID | None = None
    """Only this message's run, when set; a run that already ended is left alone."""


class RestoreVersion(BaseModel):
    """Make an earlier fragment current, in turn with the messages queued before it."""

    message_id: uuid.UUID
    """The id of the ASSISTANT message it produces, chosen by the client."""
    fragment_id: uuid.UUID


class WakePreview(BaseModel):
    """The preview was requested and found no running sandbox: start one (the gateway's)."""

    unreachable_host: str | None = None
    """A host the gateway could not reach: a sandbox there is treated as gone."""


class DeleteProject(BaseModel):
    """Cancel the project's runs, drop its queue, stop its sandboxes and remove its rows."""

    requested_by: str = "api"


# Writing the USER row must not give up while PostgreSQL is down: the message is only in
# this workflow's history until it is written.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


class MessageOutcome(BaseModel):
    message_id: uuid.UUID
    workflow_id: str
    status: ReplyStatus
    assistant_message_id: uuid.UUID | None
    content: str
    sandbox_url: str | None = None
    title: str | None = None


class ProjectStatus(BaseModel):
    queued: list[uuid.UUID]
    running: uuid.UUID | None
    sandbox_id: str | None


@workflow.defn
class ProjectWorkflow:
    @workflow.init
    def __init__(self, input: ProjectInput) -> None:
        self._project_id = input.project_id
        self._sandbox_id = input.sandbox_id
        self._queue: list[uuid.UUID] = []
        self._running: uuid.UUID | None = None
        self._outcomes: dict[uuid.UUID, MessageOutcome] = {}
        self._answered = 0
        self._recording = asyncio.Lock()
        self._child: workflow.ChildWorkflowHandle | None = None
        self._cancel_requested: set[uuid.UUID] = set()
        self._restores: dict[uuid.UUID, RestoreVersion] = {}
        self._deleting = False
        self._sandbox_host = input.sandbox_host_id
        self._sandbox_queue = input.sandbox_task_queue
        self._wake: WakePreview | None = None
        self._watch_at: datetime | None = None
        """When to look whether the live preview went quiet; None: nothing live to watch."""
        self._previews = False

    @workflow.run
    async def run(self, input: ProjectInput) -> None:
        idle = timedelta(seconds=input.idle_timeout_seconds)
        self._previews = workflow.patched(PREVIEWS_PATCH)
        if self._previews and self._sandbox_id is not None:
            self._watch_at = workflow.now()
        while True:
            if self._previews:
                if await self._wait_for_work(idle):
                    workflow.logger.info("project idle; closing its entity workflow")
                    return
                if self._wake is not None:
                    wake, self._wake = self._wake, None
                    if not self._queue and not self._deleting:  # a run would start one anyway
                        await self._start_preview(wake)
            else:
                try:
                    await workflow.wait_condition(
                        lambda: bool(self._queue) or self._deleting, timeout=idle
                    )
                except TimeoutError:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    if not self._queue:
                        workflow.logger.info("project idle; closing its entity workflow")
                        return
            while self._queue and not self._deleting:
                message_id = self._queue[0]
                self._running = message_id
                self._outcomes[message_id] = await self._answer(message_id)
                self._queue.pop(0)
                self._running = None
                self._answered += 1
                if self._previews and self._sandbox_id is not None:
                    self._watch_at = workflow.now()
                    self._wake = None  # the run left its sandbox running
            if self._deleting:
                await self._delete()
                return
            long_enough = self._answered >= input.continue_after
            if long_enough or workflow.info().is_continue_as_new_suggested():
                # Replies are handed back before the history is cut; a message arriving
                # meanwhile keeps this run going until the queue is empty again.
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.continue_as_new(
                        input.model_copy(
                            update={
                                "sandbox_id": self._sandbox_id,
                                "sandbox_host_id": self._sandbox_host,
                                "sandbox_task_queue": self._sandbox_queue,
                            }
                        )
                    )

    def _has_work(self) -> bool:
        return bool(self._queue) or self._deleting or self._wake is not None

    async def _wait_for_work(self, idle: timedelta) -> bool:
        """Wait for a message, a wake-up or a deletion, watching the live preview meanwhile.

        Returns True when the entity should close: idle for `idle`, with no live sandbox left
        to hibernate (a live preview keeps its entity open, so it is stopped once quiet).
        """
        close_at = workflow.now() + idle
        while True:
            wake_at = close_at if self._watch_at is None else min(close_at, self._watch_at)
            timeout = max(wake_at - workflow.now(), timedelta(seconds=1))
            try:
                await workflow.wait_condition(self._has_work, timeout=timeout)
                return False
            except TimeoutError:
                pass
            if self._watch_at is not None and workflow.now() >= self._watch_at:
                await self._watch_preview()
                if workflow.info().is_continue_as_new_suggested():
                    return False  # a preview watched for weeks: the run loop continues as new
                continue
            if self._watch_at is not None:
                close_at = self._watch_at
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            return not self._has_work()

    async def _watch_preview(self) -> None:
        """Hibernate the quiet preview, or keep it alive and look again when it could be."""
        assert self._sandbox_id is not None
        try:
            watch: PreviewWatch = await workflow.execute_activity_method(
                PreviewActivities.watch_preview,
                WatchPreviewInput(project_id=self._project_id, sandbox_id=self._sandbox_id),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary="hibernate the preview if quiet",
                **on_host(self._sandbox_queue),
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

    async def _start_preview(self, wake: WakePreview) -> None:
        """Give the project a running sandbox with its latest workspace (the gateway asked)."""
        lease: SandboxLease | None = None
        reachable = self._sandbox_host is None or self._sandbox_host != wake.unreachable_host
        try:
            if self._sandbox_id is not None and self._sandbox_queue is not None and reachable:
                try:  # the sandbox may still run, or its host can start the new one
                    lease = await self._start_preview_on(self._sandbox_id, self._sandbox_queue)
                except ActivityError as error:
                    if not host_gone(error):
                        raise
                    workflow.logger.warning("the preview's host is gone; reviving elsewhere")
            if lease is None:
                lease = await self._start_preview_on(None, None)
        except ActivityError as error:
            workflow.logger.warning("the preview could not start: %s", error.cause or error)
            return
        self._keep_sandbox(lease)
        self._watch_at = workflow.now()

    async def _start_preview_on(self, sandbox_id: str | None, queue: str | None) -> SandboxLease:
        return await workflow.execute_activity_method(
            PreviewActivities.start_preview,
            StartPreviewInput(project_id=self._project_id, sandbox_id=sandbox_id),
            start_to_close_timeout=timedelta(minutes=12),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=SANDBOX_RETRY,
            summary="start the preview",
            **on_host(queue),
        )

    def _keep_sandbox(self, lease: SandboxLease) -> None:
        self._sandbox_id = lease.sandbox_id
        self._sandbox_host = lease.host_id
        self._sandbox_queue = lease.task_queue

    @workflow.update
    async def submit(self, message: SubmitMessage) -> MessageOutcome:
        """Queue a message (once, even if submitted again) and return its reply when done."""
        key = message.message_id
        if key not in self._outcomes and key not in self._queue:
            self._queue.append(key)
        await workflow.wait_condition(lambda: key in self._outcomes)
        return self._outcomes[key]

    @workflow.signal
    async def enqueue(self, message: EnqueueMessage) -> None:
        """Record the USER row and queue the message, in arrival order, once."""
        key = message.message_id
        # One at a time: rows are written, and messages queued, in the order they arrived.
        async with self._recording:
            if key in self._outcomes or key in self._queue or key == self._running:
                return
            try:
                recorded: RecordedMessage = await workflow.execute_activity_method(
                    PersistenceActivities.record_message,
                    RecordMessageInput(
                        project_id=self._project_id,
                        message_id=key,
                        prompt=message.prompt,
                        new_project_name=message.new_project_name,
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RECORD_RETRY,
                    summary=f"record message {key}",
                )
            except ActivityError as error:  # the project was deleted, or the id is taken
                workflow.logger.warning("message %s not recorded: %s", key, error.cause or error)
                return
            if not recorded.answered and key not in self._queue:
                self._queue.append(key)

    @workflow.signal
    def cancel(self, request: CancelRun) -> None:
        """Cancel the running message's run; its child saves the ERROR reply itself."""
        running = self._running
        if running is None or self._child is None:
            return
        if request.message_id is not None and request.message_id != running:
            return
        self._cancel_requested.add(running)
        self._child.cancel()

    @workflow.signal
    def restore(self, request: RestoreVersion) -> None:
        """Queue a restore behind the messages already queued, once."""
        key = request.message_id
        if key in self._outcomes or key in self._queue or key == self._running:
            return
        self._restores[key] = request
        self._queue.append(key)

    @workflow.signal
    def wake(self, request: WakePreview) -> None:
        """Start the preview when no message is about to (the gateway found no sandbox)."""
        if self._wake is None or (request.unreachable_host and not self._wake.unreachable_host):
            self._wake = request

    @workflow.signal
    def delete(self, request: DeleteProject) -> None:
        """Delete the project once the running message has stopped (it is cancelled)."""
        workflow.logger.info("project deletion requested by %s", request.requested_by)
        self._deleting = True
        self._queue[1 if self._running is not None else 0 :] = []
        if self._running is not None and self._child is not None:
            self._cancel_requested.add(self._running)
            self._child.cancel()

    async def _delete(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        request = DeleteProjectInput(project_id=self._project_id, sandbox_id=self._sandbox_id)
        # On the sandbox's host, which alone can stop it; if that host is gone, anywhere.
        host = on_host(self._sandbox_queue) if self._previews else {}
        try:
            await self._delete_with(request, host)
        except ActivityError as error:
            if not host or not host_gone(error):
                raise
            workflow.logger.warning("the sandbox's host is gone; deleting the rows only")
            await self._delete_with(request, {})

    async def _delete_with(self, request: DeleteProjectInput, options: dict[str, Any]) -> None:
        await workflow.execute_activity_method(
            DeletionActivities.delete_project,
            request,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RECORD_RETRY,
            summary="delete the project",
            **options,
        )

    async def _restore_version(self, request: RestoreVersion) -> MessageOutcome:
        """A fresh sandbox gets the version exactly; the old one is stopped once it is live."""
        run_id = f"restore-{request.message_id}"
        try:
            lease: SandboxLease = await workflow.execute_activity_method(
                SandboxActivities.acquire_sandbox,
                AcquireSandboxInput(project_id=self._project_id, run_id=request.message_id),
                start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary="create a sandbox for the restored version",
            )
            restored: RestoredVersion = await workflow.execute_activity_method(
                VersionActivities.restore_version,
                RestoreVersionInput(
                    project_id=self._project_id,
                    message_id=request.message_id,
                    fragment_id=request.fragment_id,
                    sandbox_id=lease.sandbox_id,
                    sandbox_url=lease.url,
                    previous_sandbox_id=self._sandbox_id,
                ),
                start_to_close_timeout=timedelta(minutes=12),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary=f"restore version {request.fragment_id}",
                **(on_host(lease.task_queue) if self._previews else {}),
            )
        except ActivityError as error:
            workflow.logger.warning("restore %s failed: %s", request.message_id, error.cause)
            return MessageOutcome(
                message_id=request.message_id,
                workflow_id=run_id,
                status=ReplyStatus.ERROR,
                assistant_message_id=None,
                content="The version could not be restored.",
            )
        if self._previews:
            self._keep_sandbox(lease)
        else:
            self._sandbox_id = lease.sandbox_id
        if workflow.patched(RESTORE_SCREENSHOT_PATCH):
            await self._restored_screenshot(request, lease, restored)
        return MessageOutcome(
            message_id=request.message_id,
            workflow_id=run_id,
            status=ReplyStatus.RESULT,
            assistant_message_id=restored.message_id,
            content=f"Restored version {restored.title}",
            sandbox_url=lease.url,
            title=restored.title,
        )

    async def _restored_screenshot(
        self, request: RestoreVersion, lease: SandboxLease, restored: RestoredVersion
    ) -> None:
        try:
            await workflow.execute_activity_method(
                BrowserActivities.take_screenshot,
                ScreenshotInput(
                    project_id=self._project_id,
                    sandbox_id=lease.sandbox_id,
                    key=f"restore-{request.message_id}",
                    fragment_message_id=restored.message_id,
                ),
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="screenshot of the restored version",
                **(on_host(lease.task_queue) if self._previews else {}),
            )
        except ActivityError as error:
            workflow.logger.warning("no screenshot of the restored version: %s", error.cause)

    @workflow.query
    def status(self) -> ProjectStatus:
        return ProjectStatus(
            queued=list(self._queue), running=self._running, sandbox_id=self._sandbox_id
        )

    async def _save_failed_run(self, message_id: uuid.UUID, run_id: str) -> MessageOutcome:
        """The run ended without saving a reply: save an ERROR one, so no message goes unanswered.

        If the run did save its reply before failing, that reply is kept and returned.
        """
        text = (
            "The run stopped because of a failure inside the service, before it could finish. "
            "Nothing you asked for was lost: send your message again to retry."
        )
        if message_id in self._cancel_requested:  # cancelled before the run could catch it
            text = CANCELLED_TEXT
        try:
            saved = await workflow.execute_activity_method(
                PersistenceActivities.save_reply,
                SaveReplyInput(
                    project_id=self._project_id,
                    run_id=message_id,
                    workflow_id=run_id,
                    status=ReplyStatus.ERROR,
                    content=text,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RECORD_RETRY,
                summary="save ERROR for the failed run",
            )
        except ActivityError as error:  # the project or message was deleted meanwhile
            workflow.logger.warning("no reply saved for %s: %s", message_id, error.cause or error)
            return MessageOutcome(
                message_id=message_id,
                workflow_id=run_id,
                status=ReplyStatus.ERROR,
                assistant_message_id=None,
                content=text,
            )
        return MessageOutcome(
            message_id=message_id,
            workflow_id=run_id,
            status=saved.status,
            assistant_message_id=saved.message_id,
            content=saved.content,
        )

    async def _answer(self, message_id: uuid.UUID) -> MessageOutcome:
        if message_id in self._restores:
            return await self._restore_version(self._restores.pop(message_id))
        run_id = agent_run_workflow_id(message_id)
        try:
            # Started, then awaited, so `cancel` can reach the run through its handle.
            self._child = await workflow.start_child_workflow(
                CodeAgentWorkflow.run,
                AgentRunInput(
                    project_id=self._project_id,
                    message_id=message_id,
                    sandbox_id=self._sandbox_id,
                    sandbox_task_queue=self._sandbox_queue,
                ),
                id=run_id,
                search_attributes=project_search_attributes(self._project_id),
                static_summary=f"answer message {message_id}",
            )
            result: AgentRunResult = await self._child
        except ChildWorkflowError as error:
            workflow.logger.error("agent run %s failed: %s", run_id, error.cause or error)
            if not workflow.patched(SAVE_FAILED_RUN_PATCH):
                return MessageOutcome(
                    message_id=message_id,
                    workflow_id=run_id,
                    status=ReplyStatus.ERROR,
                    assistant_message_id=None,
                    content="The run failed inside the service; see the workflow in the Web UI.",
                )
            return await self._save_failed_run(message_id, run_id)
        finally:
            self._child = None
        if result.sandbox_id:
            self._sandbox_id = result.sandbox_id
            self._sandbox_host = result.sandbox_host_id
            self._sandbox_queue = result.sandbox_task_queue
        return MessageOutcome(
            message_id=message_id,
            workflow_id=run_id,
            status=result.status,
            assistant_message_id=result.assistant_message_id,
            content=result.content,
            sandbox_url=result.sandbox_url,
            title=result.title,
        )
