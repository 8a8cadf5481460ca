"""Sandboxes the code agent acts through: one interface (`base`),
a local bubblewrap backend and E2B."""

from sandboxes.base import (
    CommandFailedError,
    CommandHandle,
    CommandResult,
    EntryInfo,
    InvalidPathError,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WriteEntry,
)

__all__ = [
    "CommandFailedError",
    "CommandHandle",
    "CommandResult",
    "EntryInfo",
    "InvalidPathError",
    "Sandbox",
    "SandboxBackend",
    "SandboxError",
    "SandboxFileNotFoundError",
    "SandboxNotFoundError",
    "SandboxTimeoutError",
    "SandboxUnavailableError",
    "WriteEntry",
]
