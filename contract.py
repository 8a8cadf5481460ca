"""The contract between clients, workflows and activities: one typed model per workflow,
activity, signal, update and query, the error types recorded in history, and the constants
both sides share.

Workflows, activities and clients all import this module, and it imports neither: an activity
never depends on a workflow module. Everything here is serialised into Temporal's history, so
a field is added with a default, and an error type string never changes once shipped.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, Field

from agent.checks import CheckIssue, CheckResult, ChecksReport, CheckStatus
from agent.llm import LLMErrorType

__all__ = [
    "CheckIssue",
    "CheckResult",
    "CheckStatus",
    "ChecksReport",
    "LLMErrorType",
]

# --- shared constants -------------------------------------------------------------------------

MAX_PROMPT_CHARS: Final = 10_000
"""The longest prompt a message may carry (checked by the submission and by the signal)."""

CANCELLED_TEXT: Final = "Cancelled. Everything the agent wrote so far is kept in the project."
"""The reply of a run that was cancelled on request."""

RESTARTED_NOTE: Final = (
    "Note: the sandbox stopped and this environment was restarted. The workspace was restored "
    "as of the last completed tool call (files, deletions and npm dependencies); running "
    "processes and anything outside /home/user were not kept. This call ran again on the new "
    "sandbox."
)
"""Told to the model in the result of a tool call that ran on a replacement sandbox."""


def project_workflow_id(project_id: uuid.UUID | str) -> str:
    """The id of a project's entity workflow."""
    return f"project-{project_id}"


def agent_run_workflow_id(message_id: uuid.UUID | str) -> str:
    """The id of the agent run that answers a user message."""
    return f"agent-run-{message_id}"


def restore_workflow_id(message_id: uuid.UUID | str) -> str:
    """The id a version restore is reported under (it runs inside the project's workflow)."""
    return f"restore-{message_id}"


# --- error types ------------------------------------------------------------------------------


class SandboxErrorType(StrEnum):
    """ApplicationError types of sandbox failures. Recorded in history: never rename a value."""

    GONE = "SandboxSandboxNotFoundError"
    """The sandbox stopped (killed or expired): a run replaces it."""
    TIMEOUT = "SandboxSandboxTimeoutError"
    START_TIMEOUT = "SandboxSandboxStartTimeoutError"
    TEMPLATE = "SandboxSandboxTemplateError"
    INVALID_PATH = "SandboxInvalidPathError"
    FILE_NOT_FOUND = "SandboxSandboxFileNotFoundError"
    WORKSPACE = "SandboxWorkspaceError"
    UNAVAILABLE = "SandboxSandboxUnavailableError"
    COMMAND_FAILED = "SandboxCommandFailedError"
    OTHER = "SandboxSandboxError"


class StoreErrorType(StrEnum):
    """ApplicationError types of permanent store failures (never retried)."""

    PROJECT_NOT_FOUND = "ProjectNotFoundError"
    MESSAGE_NOT_FOUND = "MessageNotFoundError"
    UNKNOWN_MESSAGE = "UnknownMessage"
    UNKNOWN_FRAGMENT = "UnknownFragment"
    UNKNOWN_TOOL_CALL = "UnknownToolCall"


# --- the project workflow ---------------------------------------------------------------------


class ReplyStatus(StrEnum):
    RESULT = "RESULT"
    ERROR = "ERROR"


class ProjectState(BaseModel):
    """What a project's workflow carries across continue-as-new, whole."""

    sandbox_id: str | None = None
    sandbox_host_id: str | None = None
    host_queue: str | None = None
    """The task queue of the host holding `sandbox_id`."""


class ProjectInput(BaseModel):
    project_id: uuid.UUID
    state: ProjectState = Field(default_factory=ProjectState)
    idle_timeout_seconds: int = Field(default=1800, ge=1)
    """With no message for this long the entity ends; the next message starts it again."""
    continue_after: int = Field(default=100, ge=1)
    """Messages answered before continuing as new, which keeps each run's history short."""


class EnqueueMessage(BaseModel):
    """Signal `enqueue`: a message to answer. Its USER row is written under `message_id`, once."""

    message_id: uuid.UUID
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    new_project_name: str | None = None
    """Set for the first message of a new project: the project row is created with it."""


class CancelRun(BaseModel):
    """Signal `cancel`: the running message ends as an ERROR and keeps what it wrote."""

    message_id: uuid.UUID | None = None
    """Only this message's run, when set; a run that already ended is left alone."""


class RestoreVersion(BaseModel):
    """Signal `restore`: make an earlier fragment current, in turn with the queued messages."""

    message_id: uuid.UUID
    """The id of the ASSISTANT message it produces, chosen by the client."""
    fragment_id: uuid.UUID


class WakePreview(BaseModel):
    """Signal `wake`: the preview was requested and found no running sandbox (the gateway's)."""

    unreachable_host: str | None = None
    """A host the gateway could not reach: a sandbox there is treated as gone."""


class DeleteProject(BaseModel):
    """Signal `delete`: cancel the runs, drop the queue, stop the sandboxes, remove the rows."""

    requested_by: str = "api"


class MessageOutcome(BaseModel):
    """How one queued message (or restore) ended."""

    message_id: uuid.UUID
    workflow_id: str
    status: ReplyStatus
    assistant_message_id: uuid.UUID | None
    content: str
    sandbox_url: str | None = None
    title: str | None = None

    @classmethod
    def unsaved_error(cls, message_id: uuid.UUID, workflow_id: str, text: str) -> MessageOutcome:
        """An ERROR no reply row could be saved for (the project is gone, say)."""
        return cls(
            message_id=message_id,
            workflow_id=workflow_id,
            status=ReplyStatus.ERROR,
            assistant_message_id=None,
            content=text,
        )

    @classmethod
    def saved(cls, message_id: uuid.UUID, workflow_id: str, reply: SavedReply) -> MessageOutcome:
        return cls(
            message_id=message_id,
            workflow_id=workflow_id,
            status=reply.status,
            assistant_message_id=reply.message_id,
            content=reply.content,
        )

    @classmethod
    def of_run(cls, message_id: uuid.UUID, workflow_id: str, run: AgentRunResult) -> MessageOutcome:
        return cls(
            message_id=message_id,
            workflow_id=workflow_id,
            status=run.status,
            assistant_message_id=run.assistant_message_id,
            content=run.content,
            sandbox_url=run.sandbox_url,
            title=run.title,
        )


class ProjectStatus(BaseModel):
    """Query `status`."""

    queued: list[uuid.UUID]
    running: uuid.UUID | None
    sandbox_id: str | None


# --- the agent run ----------------------------------------------------------------------------


class AgentRunInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    """The user message to answer; also the run's id in the transcript store."""
    sandbox_id: str | None = None
    host_queue: str | None = None
    """The task queue of the host holding `sandbox_id`."""


class AgentRunResult(BaseModel):
    status: ReplyStatus
    assistant_message_id: uuid.UUID
    content: str
    sandbox_id: str | None
    sandbox_url: str | None
    title: str | None
    iterations: int
    sandbox_host_id: str | None = None
    host_queue: str | None = None


class RunProgress(BaseModel):
    """Query `progress` of an agent run."""

    phase: str
    iteration: int
    max_iterations: int
    current_tool: str | None
    tool_calls: int
    started_at: datetime | None


# --- persistence activities -------------------------------------------------------------------


class RecordMessageInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    prompt: str
    new_project_name: str | None = None
    """Set for a project's first message: the project row is created with this name."""


class RecordedMessage(BaseModel):
    answered: bool
    """The message already has its reply (a resubmission): there is nothing to run."""


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
    """The user's request (for the fallback title); short by the submission's input checks."""
    previous_files: int
    fix_attempts: int = 0
    """Rounds in which the model fixes what the checks found (0: no checks)."""
    restorable: bool = False
    """The project has a workspace snapshot (or files) that a new sandbox must get back."""
    max_sandbox_replacements: int = 0


class CheckFeedbackInput(BaseModel):
    run_id: uuid.UUID
    iteration: int
    """The iteration whose model call will read the feedback."""
    errors: list[CheckIssue]


class SaveReplyInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    workflow_id: str
    status: ReplyStatus
    content: str
    title: str | None = None
    sandbox_url: str | None = None
    iterations: int = 0
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""
    checks: ChecksReport | None = None
    cancelled: bool = False
    """The run ended because it was cancelled on request (an ERROR told apart in metrics)."""


class SavedReply(BaseModel):
    message_id: uuid.UUID
    status: ReplyStatus
    content: str
    files: int


# --- model activities -------------------------------------------------------------------------


class AgentTurnInput(BaseModel):
    run_id: uuid.UUID
    iteration: int = Field(ge=1)
    model: str
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""


class ToolCallRef(BaseModel):
    id: str
    name: str


class AgentTurnResult(BaseModel):
    tool_calls: list[ToolCallRef]
    summary: str | None
    """Set when the reply contains <task_summary>: the run is done after its tool calls."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    replayed: bool = False
    """True when the reply came from the store, not from a new paid call."""


class TitleInput(BaseModel):
    run_id: uuid.UUID
    model: str
    summary: str
    prompt: str
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""


# --- tool activities --------------------------------------------------------------------------


class ToolCallInput(BaseModel):
    run_id: uuid.UUID
    sandbox_id: str
    iteration: int
    tool_call_id: str
    project_id: uuid.UUID
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""
    restarted: str | None = None
    """Set when the sandbox was replaced just before this call: what to tell the model."""


class ToolCallResult(BaseModel):
    name: str
    ok: bool
    brief: str
    """A few words for progress and the Web UI; the full result is in the transcript."""
    files_in_run: int = 0
    """Distinct files this run has written so far, tool calls before this one included."""
    workspace_files: int = 0
    """Files the project has changed or added relative to the template, after this call."""


# --- check activities -------------------------------------------------------------------------


class CheckInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    sandbox_id: str
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""


class LogCheckInput(BaseModel):
    sandbox_id: str
    since: int
    """Byte offset of the server log where this round of checks began."""


# --- sandbox activities -----------------------------------------------------------------------


class AcquireSandboxInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    """The user message (or restore) the sandbox is for."""
    sandbox_id: str | None = None
    """The project's sandbox from an earlier run, reused while it is alive."""
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""


class SandboxLease(BaseModel):
    sandbox_id: str
    url: str
    """The project's stable preview URL (the gateway's), which users see."""
    fresh: bool
    """True when a new sandbox was created (it then needs the project's workspace)."""
    host_id: str | None = None
    """The worker host holding the sandbox; None for E2B sandboxes, which any host reaches."""
    host_queue: str | None = None
    """That host's own task queue: every activity touching the sandbox must run there."""


class RestoreWorkspaceInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    """The run the sandbox is for: its own snapshot counts, later messages' do not."""
    sandbox_id: str


class RestoredWorkspace(BaseModel):
    files: int
    deleted: int
    installed: bool
    """`npm install` ran because the package files differ from the template's."""
    problem: str | None = None
    """What could not be brought back (a failed install), in words for the model."""


class ExtendSandboxInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str
    timeout_seconds: int | None = None
    run_id: uuid.UUID | None = None
    """Set when a finished run checks its preview: the run's `verifying` phase."""
    max_iterations: int = 0
    """The run's limit, as recorded in history (for progress events)."""


# --- preview activities -----------------------------------------------------------------------


class StartPreviewInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str | None = None
    """The project's sandbox, reused when it still runs; else a new one gets the workspace."""


class WatchPreviewInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str


class PreviewWatch(BaseModel):
    hibernated: bool
    """The sandbox was stopped (or found gone): the next visit revives it from the snapshot."""
    check_again_seconds: float | None
    """When to look again; None when hibernation is off (QAI_PREVIEW_IDLE_SECONDS=0)."""


# --- version and deletion activities ----------------------------------------------------------


class RestoreVersionInput(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    """The id of the new ASSISTANT message, chosen by the client: it is written once."""
    fragment_id: uuid.UUID
    sandbox_id: str
    """A fresh sandbox: the version is restored onto the template exactly, deletions included."""
    sandbox_url: str
    previous_sandbox_id: str | None = None
    """The project's sandbox until now, stopped once the version is live in the new one."""


class RestoredVersion(BaseModel):
    message_id: uuid.UUID
    title: str
    files: int


class DeleteProjectInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str | None = None
    """The sandbox the project's workflow holds; others are found by their metadata."""


class DeletedProject(BaseModel):
    sandboxes_killed: int
    deleted: bool
