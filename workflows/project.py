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
from datetime import timedelta

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
    from activities.deletion import DeleteProjectInput, DeletionActivities
    from activities.persistence import (
        PersistenceActivities,
        RecordedMessage,
        RecordMessageInput,
        ReplyStatus,
        SaveReplyInput,
    )
    from activities.sandbox import AcquireSandboxInput, SandboxActivities, SandboxLease
    from activities.versions import RestoredVersion, RestoreVersionInput, VersionActivities
    from workflows.code_agent import (
        CANCELLED_TEXT,
        SANDBOX_RETRY,
        AgentRunInput,
        AgentRunResult,
        CodeAgentWorkflow,
    )

PROJECT_ID = SearchAttributeKey.for_keyword("QaiProjectId")


SAVE_FAILED_RUN_PATCH = "save-reply-of-failed-run"


def project_workflow_id(project_id: uuid.UUID | str) -> str:
    return f"project-{project_id}"


def agent_run_workflow_id(message_id: uuid.UUID | str) -> str:
    return f"agent-run-{message_id}"


def project_search_attributes(project_id: uuid.UUID | str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(PROJECT_ID, str(project_id))])


class ProjectInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str | None = None
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

    @workflow.run
    async def run(self, input: ProjectInput) -> None:
        idle = timedelta(seconds=input.idle_timeout_seconds)
        while True:
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
                        input.model_copy(update={"sandbox_id": self._sandbox_id})
                    )

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
        await workflow.execute_activity_method(
            DeletionActivities.delete_project,
            DeleteProjectInput(project_id=self._project_id, sandbox_id=self._sandbox_id),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RECORD_RETRY,
            summary="delete the project",
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
        self._sandbox_id = lease.sandbox_id
        return MessageOutcome(
            message_id=request.message_id,
            workflow_id=run_id,
            status=ReplyStatus.RESULT,
            assistant_message_id=restored.message_id,
            content=f"Restored version {restored.title}",
            sandbox_url=lease.url,
            title=restored.title,
        )

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
        return MessageOutcome(
            message_id=message_id,
            workflow_id=run_id,
            status=result.status,
            assistant_message_id=result.assistant_message_id,
            content=result.content,
            sandbox_url=result.sandbox_url,
            title=result.title,
        )
