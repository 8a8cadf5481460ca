"""Reading the conversation and saving the reply: idempotent, so retries never duplicate rows."""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import run_metrics
from activities.events import emit, run_phase
from activities.services import Services
from agent.checks import CheckIssue, ChecksReport, feedback
from agent.prompt import system_prompt
from conversation import build_conversation_payload, load_project_conversation_context
from runtime import metrics
from sandboxes.template import load_manifest
from storage import queries, snapshots, transcript
from storage.errors import MessageNotFoundError, ProjectNotFoundError
from storage.events import EventKind
from storage.models import FragmentData, Message, MessageRole, MessageType
from storage.views import message_view


class StartRunInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    """The user message this run answers."""


class StartRunResult(BaseModel):
    """The run's configuration comes from the worker's settings, recorded once in history."""

    model: str
    title_model: str
    max_iterations: int
    llm_timeout_seconds: float
    prompt: str
    """The user's request (for the fallback title); short by the starter's input checks."""
    previous_files: int
    fix_attempts: int = 0
    """Rounds in which the model fixes what the checks found (0: no checks)."""
    restorable: bool = False
    """The project has a workspace snapshot (or files) that a new sandbox must get back."""
    max_sandbox_replacements: int = 0


class RecordMessageInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    prompt: str
    new_project_name: str | None = None
    """Set for a project's first message: the project row is created with this name."""


class RecordedMessage(BaseModel):
    answered: bool
    """The message already has its reply (a resubmission): there is nothing to run."""


class ReplyStatus(StrEnum):
    RESULT = "RESULT"
    ERROR = "ERROR"


class SaveReplyInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    workflow_id: str
    status: ReplyStatus
    content: str
    title: str | None = None
    sandbox_url: str | None = None
    iterations: int = 0
    checks: ChecksReport | None = None
    screenshot_id: uuid.UUID | None = None
    """The final draft's screenshot (`take_screenshot`), if one was taken."""


class CheckFeedbackInput(BaseModel):
    run_id: uuid.UUID
    iteration: int
    """The iteration whose model call will read the feedback."""
    errors: list[CheckIssue]


class SavedReply(BaseModel):
    message_id: uuid.UUID
    status: ReplyStatus
    content: str
    files: int


async def emit_message(
    services: Services, message: Message, run_id: uuid.UUID | None = None
) -> None:
    """A `message` event for a saved message (its fragment loaded), once per message."""
    await emit(
        services.db,
        run_id or message.id,
        EventKind.MESSAGE,
        f"message:{message.id}",
        message_view(message),
    )


def _permanent(error: Exception) -> ApplicationError:
    """The project or message was deleted: retrying cannot bring it back."""
    return ApplicationError(str(error), type=type(error).__name__, non_retryable=True)


class PersistenceActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="record_message")
    async def record_message(self, input: RecordMessageInput) -> RecordedMessage:
        """Write the USER row under the client's id, so no submitted message goes unrecorded."""
        async with self._services.db.session() as session:
            try:
                answered = await queries.record_user_message(
                    session,
                    project_id=input.project_id,
                    message_id=input.message_id,
                    content=input.prompt,
                    new_project_name=input.new_project_name,
                )
            except (ProjectNotFoundError, MessageNotFoundError) as error:
                raise _permanent(error) from error
            message = await queries.get_message(session, input.message_id)
        if message is not None:
            await emit_message(self._services, message)
        return RecordedMessage(answered=answered)

    @activity.defn(name="start_run")
    async def start_run(self, input: StartRunInput) -> StartRunResult:
        """Build the agent's first messages from the conversation and store them for the run."""
        async with self._services.db.session() as session:
            try:
                context = await load_project_conversation_context(session, input.project_id)
            except ProjectNotFoundError as error:
                raise _permanent(error) from error
            position = next(
                (i for i, m in enumerate(context.messages) if m.id == input.run_id), None
            )
            if position is None:
                raise ApplicationError(
                    f"message {input.run_id} does not belong to project {input.project_id}",
                    type="UnknownMessage",
                    non_retryable=True,
                )
            user_message = context.messages[position]
            if user_message.role != MessageRole.USER:
                raise ApplicationError(
                    f"message {input.run_id} is not a user message",
                    type="UnknownMessage",
                    non_retryable=True,
                )
            # Only what came before this message: later ones are still waiting in the queue.
            earlier = context.messages[: position + 1]
            payload = build_conversation_payload(
                context.project_summary, earlier, user_message, user_message.content
            )
            manifest = load_manifest()
            system = system_prompt(
                components=manifest.components,
                preinstalled=manifest.preinstalled,
                port=manifest.port,
                notes=manifest.notes,
            )
            await transcript.start(session, input.run_id, system=system, user=payload)
            await session.commit()
            previous = context.latest_fragment
            snapshot = await snapshots.latest(session, input.project_id, up_to_run=input.run_id)
        settings = self._services.settings
        metrics.RUNS_STARTED.inc()
        return StartRunResult(
            model=settings.qai_model,
            title_model=settings.qai_title_model,
            max_iterations=settings.qai_max_iterations,
            llm_timeout_seconds=settings.qai_llm_timeout,
            prompt=user_message.content,
            previous_files=len(previous.files) if previous else 0,
            restorable=snapshot is not None or bool(previous and previous.files),
            max_sandbox_replacements=settings.qai_sandbox_replacements,
            fix_attempts=settings.qai_fix_attempts,
        )

    @activity.defn(name="add_check_feedback")
    async def add_check_feedback(self, input: CheckFeedbackInput) -> None:
        """Give the model the errors the checks found, as the next message it reads (once)."""
        async with self._services.db.session() as session:
            await transcript.append_entry(
                session,
                input.run_id,
                role="user",
                iteration=input.iteration,
                message={"role": "user", "content": feedback(input.errors)},
            )
            await session.commit()

    @activity.defn(name="save_reply")
    async def save_reply(self, input: SaveReplyInput) -> SavedReply:
        """Save exactly one assistant message for the user message, with its fragment."""
        db = self._services.db
        max_iterations = self._services.settings.qai_max_iterations
        await run_phase(db, input.run_id, "saving", max_iterations=max_iterations, key="saving")
        try:
            async with self._services.db.session() as session:
                fragment = None
                if input.status == ReplyStatus.RESULT:
                    fragment = await self._fragment(session, input)
                prompt_tokens, completion_tokens = await transcript.usage(session, input.run_id)
                message = await queries.save_assistant_reply(
                    session,
                    project_id=input.project_id,
                    user_message_id=input.run_id,
                    type=MessageType(input.status.value),
                    content=input.content,
                    workflow_id=input.workflow_id,
                    fragment=fragment,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    iterations=input.iterations,
                )
        except (ProjectNotFoundError, MessageNotFoundError) as error:
            raise _permanent(error) from error
        await emit_message(self._services, message, run_id=input.run_id)
        await run_metrics.run_ended(db, input)
        if message.type == MessageType.ERROR:
            await emit(
                db,
                input.run_id,
                EventKind.ERROR,
                "error",
                {"message_id": str(input.run_id), "content": message.content},
            )
        await run_phase(
            db,
            input.run_id,
            "done",
            iteration=input.iterations,
            max_iterations=max_iterations,
            key="done",
        )
        return SavedReply(
            message_id=message.id,
            status=ReplyStatus(message.type),
            content=message.content,
            files=len(message.fragment.files) if message.fragment else 0,
        )

    async def _fragment(self, session: AsyncSession, input: SaveReplyInput) -> FragmentData:
        """The app's source files: what the project changed or added relative to the template.

        They come from the workspace snapshot, so files made by commands count too. A project
        from before snapshots falls back to the previous fragment plus what this run wrote.
        """
        snapshot = await snapshots.latest(session, input.project_id, up_to_run=input.run_id)
        if snapshot is not None:
            files = snapshot.source_files()
        else:
            context = await load_project_conversation_context(session, input.project_id)
            # Runs of one project are serialised, so the latest fragment is the previous run's
            # (or, on a retry after saving, this run's own, which holds the same files).
            previous = context.latest_fragment
            files = dict(previous.files) if previous else {}
            files.update(await transcript.written_files(session, input.run_id))
        return FragmentData(
            sandbox_url=input.sandbox_url or "",
            title=input.title or "Untitled App",
            files=files,
            summary=input.content,
            checks=input.checks.model_dump(mode="json") if input.checks else None,
            screenshot_id=input.screenshot_id,
        )
