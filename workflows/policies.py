"""Timeouts, retry policies and failure reading shared by the workflows (deterministic)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as StepTimeoutError

with workflow.unsafe.imports_passed_through():
    from contract import CANCELLED_TEXT, SandboxErrorType

QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=6,
)
SANDBOX_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=3)
SAVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=40,
)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
"""Writing a USER row must not give up while PostgreSQL is down: until it is written, the
message is only in the project workflow's history."""
HEARTBEAT = timedelta(seconds=15)
"""A worker that dies mid-activity is noticed within this, and the activity retried elsewhere."""
HOST_WAIT = timedelta(seconds=20)
"""How long a host's queue may hold an activity: longer, and no worker polls it (the host is
gone, with its sandboxes), so the sandbox is treated as gone and replaced elsewhere."""


def on_host(host_queue: str | None) -> dict[str, Any]:
    """Options that send an activity to a sandbox's host (none for sandboxes any host reaches)."""
    if host_queue is None:
        return {}
    return {"task_queue": host_queue, "schedule_to_start_timeout": HOST_WAIT}


def host_gone(error: ActivityError) -> bool:
    """No worker of the sandbox's host took the activity in time."""
    cause = error.cause
    return isinstance(cause, StepTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def sandbox_gone(error: ActivityError) -> bool:
    """The sandbox stopped, or its host did: either way the run replaces it."""
    cause = error.cause
    gone = isinstance(cause, ApplicationError) and cause.type == SandboxErrorType.GONE
    return gone or host_gone(error)


def failure_text(error: ActivityError) -> str:
    """What went wrong, in the words of the activity that classified it."""
    cause = error.cause
    if isinstance(cause, CancelledError):  # the run was cancelled while the step ran
        return CANCELLED_TEXT
    if isinstance(cause, ApplicationError) and cause.message:
        return cause.message
    if isinstance(cause, StepTimeoutError):
        return "A step of the run timed out repeatedly."
    return "An internal step failed repeatedly."
