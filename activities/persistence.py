"""Reading the conversation and saving the reply: idempotent, so retries never duplicate rows."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import run_metrics
from activities.events import emit, run_phase
from activities.services import Services
from agent.checks import feedback
from agent.prompt import system_prompt
from contract import (
    CheckFeedbackInput,
    RecordedMessage,
    RecordMessageInput,
    ReplyStatus,
    SavedReply,
    SaveReplyInput,
    StartRunInput,
    StartRunResult,
    StoreErrorType,
)
from conversation import build_conversation_payload, load_project_conversation_context
from runtime import metrics
from sandboxes.manifest import load_manifest
from storage import queries, snapshots, transcript
from storage.errors import MessageNotFoundError, ProjectNotFoundError
from storage.events import EventKind
from storage.models import FragmentData, Message, MessageRole, MessageType
from storage.views import message_view


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
                    type=StoreErrorType.UNKNOWN_MESSAGE,
                    non_retryable=True,
                )
            user_message = context.messages[position]
            if user_message.role != MessageRole.USER:
                raise ApplicationError(
                    f"message {input.run_id} is not a user message",
                    type=StoreErrorType.UNKNOWN_MESSAGE,
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
            workspace = await snapshots.workspace(session, input.project_id, up_to_run=input.run_id)
        settings = self._services.settings
        metrics.RUNS_STARTED.inc()
        return StartRunResult(
            model=settings.qai_model,
            title_model=settings.qai_title_model,
            max_iterations=settings.qai_max_iterations,
            llm_timeout_seconds=settings.qai_llm_timeout,
            prompt=user_message.content,
            previous_files=len(previous.files) if previous else 0,
            restorable=workspace is not None,
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
        max_iterations = input.max_iterations
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

        They come from the workspace snapshot, so files made by commands count too.
        """
        workspace = await snapshots.workspace(session, input.project_id, up_to_run=input.run_id)
        files = workspace.source_files() if workspace else {}
        return FragmentData(
            sandbox_url=input.sandbox_url or "",
            title=input.title or "Untitled App",
            files=files,
            summary=input.content,
            checks=input.checks.model_dump(mode="json") if input.checks else None,
        )
