"""The one way to submit work: check a prompt, hand the message to its project's workflow, and
wait for the reply. The CLI (`starter.py`) is a thin client of this module.

A submission is a signal-with-start to the project's entity workflow. The server keeps it the
moment it answers, with or without a worker, and the workflow writes the USER row from the ids
chosen here. So nothing is written before the message is safe in Temporal, a client that dies
right after submitting loses nothing, and `--no-wait` returns at once even with no worker.
Waiting reads the reply from PostgreSQL, which outlives any one workflow run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from contract import (
    MAX_PROMPT_CHARS,
    CancelRun,
    EnqueueMessage,
    MessageOutcome,
    ProjectInput,
    PublishVersion,
    RunProgress,
    Unpublish,
    WakePreview,
    agent_run_workflow_id,
    project_workflow_id,
)
from repos.importing import FetchedRepository, fetch_repository, save_import
from runtime.settings import Settings
from runtime.slots import WAIT_PHASES
from storage import events, images, publications, queries, versions
from storage.db import Database
from storage.errors import ProjectNotFoundError
from storage.image_files import CheckedImage, ImageRejected, check_images
from storage.models import Message
from workflows.code_agent import CodeAgentWorkflow
from workflows.project import ProjectWorkflow, project_search_attributes

log = logging.getLogger(__name__)

WORKER_GRACE_SECONDS = 3.0
"""How long a submission may wait unpicked before the client says no worker is polling."""
POLLER_FRESH_SECONDS = 75.0
"""A poller seen this recently is alive: long polls last up to a minute."""


class InvalidSubmission(ValueError):
    """A mistake in what the user sent: reported in one line, and nothing is written."""


class PublishRefused(InvalidSubmission):
    """A publish that cannot be: `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageUpload:
    """An image as the user sent it: its file name, bytes, and the type it claims (if any)."""

    name: str
    data: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class Submission:
    """A checked message, ready to send: nothing is written until it is sent."""

    project_id: uuid.UUID
    message: EnqueueMessage
    images: tuple[CheckedImage, ...] = field(default=())
    """Checked and cleaned of metadata; stored by `send`, their ids in `message`."""

    @property
    def message_id(self) -> uuid.UUID:
        return self.message.message_id

    @property
    def workflow_id(self) -> str:
        """The Temporal workflow that answers the message (its agent run)."""
        return agent_run_workflow_id(self.message.message_id)


@dataclass(frozen=True)
class Waiting:
    """What a client waiting for a reply can show."""

    progress: RunProgress | None
    """The run's progress, or None while the message is queued."""
    no_worker: str | None
    """Set when no worker polls the task queue: the words to show."""
    elapsed: float
    slot_wait: str | None = None
    """Set while the run waits for one of the host's CPU slots: `waiting for a check slot`."""


def check_prompt(prompt: str) -> str:
    text = prompt.strip()
    if not text:
        raise InvalidSubmission("the prompt is empty; describe the app you want")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidSubmission(
            f"the prompt is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARS:,}"
        )
    return text


def check_project_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidSubmission(
            f"{value!r} is not a project id (ids look like {uuid.uuid4()})"
        ) from None


def check_uploads(uploads: Sequence[ImageUpload]) -> tuple[CheckedImage, ...]:
    """Every image accepted (count, type, size, pixels), or InvalidSubmission; writes nothing."""
    try:
        return tuple(check_images([(u.name, u.data, u.content_type) for u in uploads]))
    except ImageRejected as error:
        raise InvalidSubmission(str(error)) from None


def project_name(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:4]
    return "-".join(words) or "project"


async def check_submission(
    db: Database,
    prompt: str,
    *,
    project_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    client: Client | None = None,
    uploads: Sequence[ImageUpload] = (),
) -> Submission:
    """Check the prompt, the images, and that the project exists; writes nothing.

    Without `project_id` the message starts a new project. A `message_id` chosen by the caller
    makes a resubmission of the same message answer it once. With a `client`, a project whose
    first message no worker has recorded yet (its workflow runs, its row is not written) takes
    follow-ups too: they are recorded after it, in arrival order.
    """
    text = check_prompt(prompt)
    # Decoding and re-encoding images takes a while: off the event loop (the API serves on).
    checked = await asyncio.to_thread(check_uploads, uploads) if uploads else ()
    new_project_name = None
    if project_id is None:
        project_id = uuid.uuid4()
        new_project_name = project_name(text)
    else:
        async with db.session() as session:
            missing = await queries.get_project(session, project_id) is None
        if missing and not (client is not None and await project_pending(client, project_id)):
            raise ProjectNotFoundError(project_id)
    message = EnqueueMessage(
        message_id=message_id or uuid.uuid4(),
        prompt=text,
        new_project_name=new_project_name,
        image_ids=[image.sha256 for image in checked],
    )
    return Submission(project_id, message, checked)


async def project_pending(client: Client, project_id: uuid.UUID) -> bool:
    """True when the project's workflow runs: its first message may still be unrecorded."""
    try:
        description = await client.get_workflow_handle(project_workflow_id(project_id)).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


async def submit_prompt(
    client: Client,
    db: Database,
    settings: Settings,
    prompt: str,
    *,
    project_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    uploads: Sequence[ImageUpload] = (),
) -> Submission:
    """Check, then send: the whole submission for a client that is already connected."""
    submission = await check_submission(
        db, prompt, project_id=project_id, message_id=message_id, client=client, uploads=uploads
    )
    await send(client, db, settings, submission)
    return submission


async def send(client: Client, db: Database, settings: Settings, submission: Submission) -> None:
    """Store the message's images (once per content), then hand the message to its workflow.

    The images must be stored first: history carries their ids only. A signal the server
    plainly refused leaves no images behind.
    """
    if submission.images:
        async with db.session() as session:
            await images.store_for_message(
                session,
                project_id=submission.project_id,
                message_id=submission.message_id,
                images=submission.images,
            )
    try:
        await enqueue(client, settings, submission.project_id, submission.message)
    except RPCError as error:
        if submission.images and error.status not in _MAYBE_DELIVERED:
            async with db.session() as session:
                await images.discard_unrecorded(session, submission.message_id)
        raise


_MAYBE_DELIVERED = {RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN}
"""Signal failures after which the workflow may still have the message (keep its images)."""


@dataclass(frozen=True)
class ImportedProject:
    project_id: uuid.UUID
    imported_message_id: uuid.UUID
    """The RESULT "Imported <url> at <commit>": the project's first version."""
    commit: str
    fetched: FetchedRepository
    submission: Submission | None
    """The prompt's follow-up, when a prompt was given."""

    @property
    def workflow_id(self) -> str:
        return (
            self.submission.workflow_id if self.submission else project_workflow_id(self.project_id)
        )


async def import_project(
    client: Client,
    db: Database,
    settings: Settings,
    repo_url: str,
    *,
    ref: str | None = None,
    token: str | None = None,
    prompt: str | None = None,
) -> ImportedProject:
    """A new project from a git repository, then the prompt (if any) as its first follow-up.

    The repository is checked and fetched before anything is written (ImportRefused says why
    not). Its sandbox starts with the files and runs `npm install`: the follow-up's run does
    that, or else the project's workflow starts the preview.
    """
    text = check_prompt(prompt) if prompt is not None else None
    fetched = await fetch_repository(settings, repo_url, ref, token)
    project_id = uuid.uuid4()
    message = await save_import(db, settings, fetched, project_id)
    submission = None
    try:
        if text is not None:
            submission = await submit_prompt(client, db, settings, text, project_id=project_id)
        else:
            await signal_project(client, settings, project_id, "wake", WakePreview())
    except BaseException:  # Temporal refused: leave no project nobody will ever answer
        async with db.session() as session:
            await versions.delete_project(session, project_id)
        raise
    return ImportedProject(
        project_id=project_id,
        imported_message_id=message.id,
        commit=fetched.commit,
        fetched=fetched,
        submission=submission,
    )


async def enqueue(
    client: Client, settings: Settings, project_id: uuid.UUID, message: EnqueueMessage
) -> None:
    """Signal-with-start: durable as soon as it returns, whether or not a worker is up."""
    await signal_project(client, settings, project_id, "enqueue", message)


async def signal_project(
    client: Client, settings: Settings, project_id: uuid.UUID, signal: str, argument: BaseModel
) -> None:
    """Send one of ProjectWorkflow's signals, starting the entity if it is not running."""
    workflow_id = project_workflow_id(project_id)
    try:
        await client.start_workflow(
            ProjectWorkflow.run,
            ProjectInput(project_id=project_id, idle_timeout_seconds=settings.qai_sandbox_timeout),
            id=workflow_id,
            task_queue=settings.qai_task_queue,
            start_signal=signal,
            start_signal_args=[argument],
            search_attributes=project_search_attributes(project_id),
            static_summary=f"project {project_id}",
        )
    except WorkflowAlreadyStartedError:
        # Two first messages raced and the time-skipping test server does not make
        # signal-with-start atomic; the entity now runs, so signal it.
        await client.get_workflow_handle(workflow_id).signal(signal, argument)


async def check_publish(
    db: Database, project_id: uuid.UUID, fragment_id: uuid.UUID | None
) -> PublishVersion:
    """The publish of `fragment_id` (default: the latest RESULT's); writes nothing.

    Raises ProjectNotFoundError, or PublishRefused for a fragment that is unknown, another
    project's, or missing because the project has no RESULT yet.
    """
    async with db.session() as session:
        if await queries.get_project(session, project_id) is None:
            raise ProjectNotFoundError(project_id)
        if fragment_id is None:
            fragment = await versions.latest_result_fragment(session, project_id)
            if fragment is None:
                raise PublishRefused("the project has no finished version (RESULT) to publish", 409)
        else:
            fragment = await versions.get_fragment(session, fragment_id)
            if fragment is None:
                raise PublishRefused(f"there is no version (fragment) {fragment_id}", 404)
            if await versions.fragment_project(session, fragment) != project_id:
                raise PublishRefused(f"version {fragment_id} belongs to another project", 422)
    return PublishVersion(publication_id=uuid.uuid4(), fragment_id=fragment.id)


async def publish(
    client: Client,
    db: Database,
    settings: Settings,
    project_id: uuid.UUID,
    fragment_id: uuid.UUID | None = None,
) -> PublishVersion:
    """Check, then queue the publish in the project's workflow."""
    request = await check_publish(db, project_id, fragment_id)
    await signal_project(client, settings, project_id, "publish", request)
    return request


async def unpublish(
    client: Client, db: Database, settings: Settings, project_id: uuid.UUID
) -> Unpublish:
    """Queue the unpublish (after any publish queued before it)."""
    request = await check_unpublish(db, project_id)
    await signal_project(client, settings, project_id, "unpublish", request)
    return request


async def check_unpublish(db: Database, project_id: uuid.UUID) -> Unpublish:
    """The unpublish of an existing project (ProjectNotFoundError otherwise); writes nothing."""
    async with db.session() as session:
        if await queries.get_project(session, project_id) is None:
            raise ProjectNotFoundError(project_id)
    return Unpublish(request_id=uuid.uuid4())


async def wait_for_publication(
    db: Database,
    publication_id: uuid.UUID,
    *,
    wait_seconds: float = 1200,
    poll_seconds: float = 0.5,
) -> publications.PublicationRow:
    """The publication once it is live or failed (TimeoutError after `wait_seconds`)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        async with db.session() as session:
            row = await publications.get(session, publication_id)
        if row is not None and row.status != publications.PublicationStatus.BUILDING:
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"publication {publication_id} is not done after {wait_seconds:.0f}s"
            )
        await asyncio.sleep(poll_seconds)


async def wait_unpublished(
    db: Database, project_id: uuid.UUID, *, wait_seconds: float = 120, poll_seconds: float = 0.3
) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        async with db.session() as session:
            if await publications.latest(session, project_id) is None:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"project {project_id} is still published after {wait_seconds:.0f}s")
        await asyncio.sleep(poll_seconds)


async def cancel_running(client: Client, project_id: uuid.UUID) -> bool:
    """Cancel the project's running message (it ends as an ERROR and keeps its work); False
    when the project's workflow is not running, so nothing can be."""
    handle = client.get_workflow_handle(project_workflow_id(project_id))
    try:
        await handle.signal(ProjectWorkflow.cancel, CancelRun())
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def reply_to(db: Database, message_id: uuid.UUID) -> Message | None:
    async with db.session() as session:
        return await queries.get_reply(session, message_id)


def outcome_of(reply: Message, message_id: uuid.UUID) -> MessageOutcome:
    fragment = reply.fragment
    return MessageOutcome(
        message_id=message_id,
        workflow_id=agent_run_workflow_id(message_id),
        status=reply.type.value,
        assistant_message_id=reply.id,
        content=reply.content,
        sandbox_url=fragment.sandbox_url if fragment else None,
        title=fragment.title if fragment else None,
    )


async def wait_for_reply(
    client: Client,
    db: Database,
    settings: Settings,
    message_id: uuid.UUID,
    *,
    on_wait: Callable[[Waiting], None] | None = None,
    poll_seconds: float = 0.5,
) -> Message:
    """The reply once it is saved; meanwhile `on_wait` hears the progress, or that no worker
    polls the task queue (checked every few seconds, after a short grace)."""
    started = time.monotonic()
    run = client.get_workflow_handle(agent_run_workflow_id(message_id))
    no_worker: str | None = None
    checked = 0.0
    while True:
        reply = await reply_to(db, message_id)
        if reply is not None:
            return reply
        elapsed = time.monotonic() - started
        try:
            progress = await run.query(CodeAgentWorkflow.progress)
        except RPCError:
            progress = None  # not started yet: queued behind another message, or no worker
        if elapsed >= WORKER_GRACE_SECONDS and elapsed - checked >= WORKER_GRACE_SECONDS:
            checked = elapsed
            no_worker = None
            if await workers_polling(client, settings) is False:
                no_worker = f"waiting for a worker on task queue {settings.qai_task_queue}"
        if on_wait is not None:
            slot_wait = await waiting_for_slot(db, message_id) if progress is not None else None
            on_wait(
                Waiting(
                    progress=progress, no_worker=no_worker, elapsed=elapsed, slot_wait=slot_wait
                )
            )
        await asyncio.sleep(poll_seconds)


async def waiting_for_slot(db: Database, message_id: uuid.UUID) -> str | None:
    """The run's `waiting for a ... slot` phase while it waits for one, else None."""
    async with db.session() as session:
        phase = await events.latest_run_phase(session, message_id)
    return phase if phase in WAIT_PHASES.values() else None


async def workers_polling(client: Client, settings: Settings) -> bool | None:
    """Whether some worker polled the task queue lately; None when the server can't tell.

    The time-skipping test server has no DescribeTaskQueue, and a busy server may fail the
    call: this is only a hint for the person waiting, so it never stops the wait.
    """
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
                task_queue=TaskQueue(
                    name=settings.qai_task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL
                ),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError as error:
        if error.status != RPCStatusCode.UNIMPLEMENTED:
            log.warning("could not ask Temporal about the task queue's workers: %s", error)
        return None
    now = time.time()
    return any(
        now - poller.last_access_time.ToSeconds() < POLLER_FRESH_SECONDS
        for poller in response.pollers
    )
