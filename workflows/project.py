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
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.deletion import DeletionActivities
    from activities.persistence import PersistenceActivities
    from activities.sandbox import SandboxActivities
    from activities.versions import VersionActivities
    from contract import (
        CANCELLED_TEXT,
        AcquireSandboxInput,
        AgentRunInput,
        AgentRunResult,
        CancelRun,
        DeleteProject,
        DeleteProjectInput,
        EnqueueMessage,
        MessageOutcome,
        ProjectInput,
        ProjectStatus,
        RecordedMessage,
        RecordMessageInput,
        ReplyStatus,
        RestoredVersion,
        RestoreVersion,
        RestoreVersionInput,
        SandboxLease,
        SaveReplyInput,
        WakePreview,
        agent_run_workflow_id,
        restore_workflow_id,
    )
    from workflows.code_agent import CodeAgentWorkflow
    from workflows.policies import RECORD_RETRY, SANDBOX_RETRY, host_gone, on_host
    from workflows.preview_lifecycle import PreviewLifecycle

PROJECT_ID = SearchAttributeKey.for_keyword("QaiProjectId")

FAILED_RUN_TEXT = (
    "The run stopped because of a failure inside the service, before it could finish. "
    "Nothing you asked for was lost: send your message again to retry."
)


def project_search_attributes(project_id: uuid.UUID | str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(PROJECT_ID, str(project_id))])


@workflow.defn
class ProjectWorkflow:
    @workflow.init
    def __init__(self, input: ProjectInput) -> None:
        self._project_id = input.project_id
        self._state = input.state
        """Carried whole across continue-as-new: the project's sandbox and its host."""
        self._preview = PreviewLifecycle(input.project_id, self._state)
        self._queue: list[uuid.UUID] = []
        """Messages and restores, in arrival order; the first one is running."""
        self._restores: dict[uuid.UUID, RestoreVersion] = {}
        self._running: uuid.UUID | None = None
        self._child: workflow.ChildWorkflowHandle | None = None
        self._done: set[uuid.UUID] = set()
        self._cancel_requested: set[uuid.UUID] = set()
        self._answered = 0
        self._deleting = False
        self._recording = asyncio.Lock()

    @workflow.run
    async def run(self, input: ProjectInput) -> None:
        idle = timedelta(seconds=input.idle_timeout_seconds)
        self._preview.begin()
        while True:
            if await self._preview.wait_for_work(idle, self._has_work):
                workflow.logger.info("project idle; closing its entity workflow")
                return
            # A queued run starts the preview anyway.
            await self._preview.take_wake(start=not self._queue and not self._deleting)
            while self._queue and not self._deleting:
                message_id = self._queue[0]
                self._running = message_id
                await self._answer(message_id)
                self._done.add(message_id)
                self._queue.pop(0)
                self._running = None
                self._answered += 1
                self._preview.after_run()
            if self._deleting:
                await self._delete()
                return
            long_enough = self._answered >= input.continue_after
            if long_enough or workflow.info().is_continue_as_new_suggested():
                # Every handler finishes before the history is cut; a message arriving
                # meanwhile keeps this run going until the queue is empty again.
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.continue_as_new(input.model_copy(update={"state": self._state}))

    def _has_work(self) -> bool:
        return bool(self._queue) or self._deleting

    @workflow.signal
    async def enqueue(self, message: EnqueueMessage) -> None:
        """Record the USER row and queue the message, in arrival order, once."""
        key = message.message_id
        # One at a time: rows are written, and messages queued, in the order they arrived.
        async with self._recording:
            if key in self._done or key in self._queue:
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
        if key in self._done or key in self._queue:
            return
        self._restores[key] = request
        self._queue.append(key)

    @workflow.signal
    def wake(self, request: WakePreview) -> None:
        """Start the preview when no message is about to (the gateway found no sandbox)."""
        self._preview.woken(request)

    @workflow.signal
    def delete(self, request: DeleteProject) -> None:
        """Delete the project once the running message has stopped (it is cancelled)."""
        workflow.logger.info("project deletion requested by %s", request.requested_by)
        self._deleting = True
        self._queue[1 if self._running is not None else 0 :] = []
        if self._running is not None and self._child is not None:
            self._cancel_requested.add(self._running)
            self._child.cancel()

    @workflow.query
    def status(self) -> ProjectStatus:
        return ProjectStatus(
            queued=list(self._queue), running=self._running, sandbox_id=self._state.sandbox_id
        )

    async def _answer(self, message_id: uuid.UUID) -> MessageOutcome:
        if message_id in self._restores:
            return await self._restore_version(self._restores.pop(message_id))
        workflow_id = agent_run_workflow_id(message_id)
        try:
            # Started, then awaited, so `cancel` can reach the run through its handle.
            self._child = await workflow.start_child_workflow(
                CodeAgentWorkflow.run,
                AgentRunInput(
                    project_id=self._project_id,
                    message_id=message_id,
                    sandbox_id=self._state.sandbox_id,
                    host_queue=self._state.host_queue,
                ),
                id=workflow_id,
                search_attributes=project_search_attributes(self._project_id),
                static_summary=f"answer message {message_id}",
            )
            result: AgentRunResult = await self._child
        except ChildWorkflowError as error:
            workflow.logger.error("agent run %s failed: %s", workflow_id, error.cause or error)
            return await self._save_failed_run(message_id, workflow_id)
        finally:
            self._child = None
        if result.sandbox_id:
            self._state.sandbox_id = result.sandbox_id
            self._state.sandbox_host_id = result.sandbox_host_id
            self._state.host_queue = result.host_queue
        return MessageOutcome.of_run(message_id, workflow_id, result)

    async def _save_failed_run(self, message_id: uuid.UUID, workflow_id: str) -> MessageOutcome:
        """The run ended without saving a reply: save an ERROR one, so no message goes unanswered.

        If the run did save its reply before failing, that reply is kept and returned.
        """
        cancelled = message_id in self._cancel_requested  # before the run could catch it
        text = CANCELLED_TEXT if cancelled else FAILED_RUN_TEXT
        try:
            saved = await workflow.execute_activity_method(
                PersistenceActivities.save_reply,
                SaveReplyInput(
                    project_id=self._project_id,
                    run_id=message_id,
                    workflow_id=workflow_id,
                    status=ReplyStatus.ERROR,
                    content=text,
                    cancelled=cancelled,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RECORD_RETRY,
                summary="save ERROR for the failed run",
            )
        except ActivityError as error:  # the project or message was deleted meanwhile
            workflow.logger.warning("no reply saved for %s: %s", message_id, error.cause or error)
            return MessageOutcome.unsaved_error(message_id, workflow_id, text)
        return MessageOutcome.saved(message_id, workflow_id, saved)

    async def _restore_version(self, request: RestoreVersion) -> MessageOutcome:
        """A fresh sandbox gets the version exactly; the old one is stopped once it is live."""
        workflow_id = restore_workflow_id(request.message_id)
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
                    previous_sandbox_id=self._state.sandbox_id,
                ),
                start_to_close_timeout=timedelta(minutes=12),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=SANDBOX_RETRY,
                summary=f"restore version {request.fragment_id}",
                **on_host(lease.host_queue),
            )
        except ActivityError as error:
            workflow.logger.warning("restore %s failed: %s", request.message_id, error.cause)
            return MessageOutcome.unsaved_error(
                request.message_id, workflow_id, "The version could not be restored."
            )
        self._preview.keep(lease)
        return MessageOutcome(
            message_id=request.message_id,
            workflow_id=workflow_id,
            status=ReplyStatus.RESULT,
            assistant_message_id=restored.message_id,
            content=f"Restored version {restored.title}",
            sandbox_url=lease.url,
            title=restored.title,
        )

    async def _delete(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        request = DeleteProjectInput(project_id=self._project_id, sandbox_id=self._state.sandbox_id)
        # On the sandbox's host, which alone can stop it; if that host is gone, anywhere.
        host = on_host(self._state.host_queue)
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
