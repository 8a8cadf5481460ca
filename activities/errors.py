"""Error classification at the activity boundary: permanent failures must not be retried.

The ApplicationError's message is what a user reads when the run ends, so it is plain words
chosen by the error's class: never the error's own text, which can hold host paths, the
supervisor's log or exception names. That detail goes to the worker's log, and stays in the
failure's cause chain that Temporal records, for operators.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from contract import SandboxErrorType
from runtime.logs import get_logger
from sandboxes.base import (
    CommandFailedError,
    InvalidPathError,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    SandboxStartTimeoutError,
    SandboxTemplateError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WorkspaceError,
)

log = get_logger(__name__)

_WORKSPACE_WORDS = {
    "is_a_directory": "a file was to be written where a folder is",
    "not_a_directory": "a file was to be written inside another file",
    "no_space": "the sandbox's disk is full",
    "permission_denied": "a file could not be written for lack of permission",
    "too_large": "a file is too large",
    "name_too_long": "a file name is too long",
}


def user_message(error: SandboxError, doing: str) -> str:
    """What went wrong, in words for the person who asked for the app."""
    if isinstance(error, SandboxNotFoundError):
        return f"The sandbox is gone (expired or removed) while {doing}."
    if isinstance(error, SandboxStartTimeoutError):
        return f"The sandbox took too long to start, so {doing} failed. Please try again."
    if isinstance(error, SandboxTimeoutError):
        return f"The sandbox did not answer in time while {doing}."
    if isinstance(error, SandboxTemplateError):
        return (
            f"The sandbox could not start from its template, so {doing} failed. "
            "This needs a fix by the operator; trying again will not help."
        )
    if isinstance(error, WorkspaceError):
        words = _WORKSPACE_WORDS.get(error.reason, "a file operation was refused")
        return f"The sandbox could not finish {doing}: {words}."
    if isinstance(error, InvalidPathError | SandboxFileNotFoundError):
        return f"The sandbox could not finish {doing}: a file path was refused or is missing."
    if isinstance(error, CommandFailedError):
        return f"A command failed in the sandbox while {doing}."
    if isinstance(error, SandboxUnavailableError) and error.retryable:
        return f"The sandbox service could not be reached while {doing}."
    return f"The sandbox could not be used while {doing}. The operator can find why in the logs."


def error_type(error: SandboxError) -> SandboxErrorType:
    """The recorded type of a sandbox error: an explicit constant, never a class name, so a
    renamed class cannot change what a replay sees. Most specific class first."""
    for cls, kind in _TYPES:
        if isinstance(error, cls):
            return kind
    return SandboxErrorType.OTHER


_TYPES: tuple[tuple[type[SandboxError], SandboxErrorType], ...] = (
    (SandboxNotFoundError, SandboxErrorType.GONE),
    (SandboxStartTimeoutError, SandboxErrorType.START_TIMEOUT),
    (SandboxTimeoutError, SandboxErrorType.TIMEOUT),
    (SandboxTemplateError, SandboxErrorType.TEMPLATE),
    (InvalidPathError, SandboxErrorType.INVALID_PATH),
    (SandboxFileNotFoundError, SandboxErrorType.FILE_NOT_FOUND),
    (WorkspaceError, SandboxErrorType.WORKSPACE),
    (SandboxUnavailableError, SandboxErrorType.UNAVAILABLE),
    (CommandFailedError, SandboxErrorType.COMMAND_FAILED),
)


def sandbox_failure(error: SandboxError, doing: str) -> ApplicationError:
    """Turn a sandbox error into an ApplicationError whose message a user can read.

    Raise it `from error`: the technical detail then travels as the failure's cause.
    """
    log.warning(
        "sandbox failure",
        doing=doing,
        error_type=type(error).__name__,
        detail=str(error),
        retryable=error.retryable,
    )
    return ApplicationError(
        user_message(error, doing),
        type=error_type(error),
        non_retryable=not error.retryable,
    )
