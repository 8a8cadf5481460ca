"""Error classification at the activity boundary: permanent failures must not be retried."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from sandboxes.base import SandboxError, SandboxNotFoundError

SANDBOX_GONE = f"Sandbox{SandboxNotFoundError.__name__}"
"""The ApplicationError type of a sandbox that stopped (killed or expired): a run replaces it."""


def sandbox_failure(error: SandboxError, doing: str) -> ApplicationError:
    """Turn a sandbox error into an ApplicationError whose message a user can read."""
    if isinstance(error, SandboxNotFoundError):
        message = f"The sandbox is gone (expired or removed) while {doing}."
    else:
        message = f"The sandbox failed while {doing}: {error}"
    return ApplicationError(
        message, type=f"Sandbox{type(error).__name__}", non_retryable=not error.retryable
    )
