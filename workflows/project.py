"""The project entity: one long-lived workflow per project that answers its messages in order.

Clients submit a message with update-with-start; the update returns when that message has its
reply. Runs happen one at a time, each as a `CodeAgentWorkflow` child, so two quick messages
never race on the sandbox or on the conversation summary, and the sandbox is reused between
them while it lives.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.persistence import ReplyStatus
    from workflows.code_agent import AgentRunInput, AgentRunResult, CodeAgentWorkflow

PROJECT_ID = SearchAttributeKey.for_keyword("QaiProjectId")


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
    message_id: uuid.UUID


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

    @workflow.run
    async def run(self, input: ProjectInput) -> None:
        idle = timedelta(seconds=input.idle_timeout_seconds)
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self._queue), timeout=idle)
            except TimeoutError:
                await workflow.wait_condition(workflow.all_handlers_finished)
                if not self._queue:
                    workflow.logger.info("project idle; closing its entity workflow")
                    return
            while self._queue:
                message_id = self._queue[0]
                self._running = message_id
                self._outcomes[message_id] = await self._answer(message_id)
                self._queue.pop(0)
                self._running = None
                self._answered += 1
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

    @workflow.query
    def status(self) -> ProjectStatus:
        return ProjectStatus(
            queued=list(self._queue), running=self._running, sandbox_id=self._sandbox_id
        )

    async def _answer(self, message_id: uuid.UUID) -> MessageOutcome:
        run_id = agent_run_workflow_id(message_id)
        try:
            result: AgentRunResult = await workflow.execute_child_workflow(
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
        except ChildWorkflowError as error:
            workflow.logger.error("agent run %s failed: %s", run_id, error.cause or error)
            return MessageOutcome(
                message_id=message_id,
                workflow_id=run_id,
                status=ReplyStatus.ERROR,
                assistant_message_id=None,
                content="The run failed inside the service; see the workflow in the Web UI.",
            )
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
