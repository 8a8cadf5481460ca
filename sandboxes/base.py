"""The sandbox interface, shaped after `e2b.AsyncSandbox` so both backends are interchangeable.

    sbx = await backend.create(template="nextjs", timeout=1800, metadata={"project_id": ...})
    sbx = await backend.connect(sandbox_id)
    result = await sbx.commands.run("npm run lint", timeout=120, cwd="/home/user")
    await sbx.files.write("app/page.tsx", source)
    url = sbx.preview_url(3000)

Paths are relative to /home/user or absolute inside it. A command that exits non-zero raises
`CommandFailedError` carrying its result, as E2B's `CommandExitException` does.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, overload

from sandboxes.snapshot import (
    HASH_COMMAND,
    LIST_COMMAND,
    MAX_FILE_BYTES,
    WorkspaceSnapshot,
    changed_paths,
    parse_hashes,
    parse_listing,
)

HOME = "/home/user"
INSTALL_COMMAND = "npm install --no-audit --no-fund"
INSTALL_TIMEOUT = 600

OutputCallback = Callable[[str], Awaitable[None] | None]


class SandboxError(Exception):
    """Base of every sandbox error. `retryable` says whether trying again may help."""

    retryable: bool = False


class SandboxTimeoutError(SandboxError):
    """A command or request ran past its timeout (the command was killed, with its children)."""

    retryable = True


class SandboxStartTimeoutError(SandboxTimeoutError):
    """A new sandbox was not ready in time: a loaded host is slow, so a later attempt may work."""


class SandboxTemplateError(SandboxError):
    """A sandbox cannot start from its template (its start failed, or the template is missing or
    too old for the backend): every attempt would fail the same way, so it is never retried."""


class SandboxNotFoundError(SandboxError):
    """No such sandbox, or it expired and was reaped."""


class InvalidPathError(SandboxError):
    """A path resolves outside /home/user (`..`, another absolute path, or an escaping symlink)."""


class SandboxFileNotFoundError(SandboxError, FileNotFoundError):
    """The file or directory does not exist inside the sandbox."""


class WorkspaceError(SandboxError):
    """The request does not fit the workspace: a directory where a file should go, a folder that
    is a file, a full disk, a path the sandbox user may not write, a file too large to read.

    The sandbox itself works, so the agent's tools show this to the model, which can correct it;
    retrying the same request cannot help. `reason` is a short code (`is_a_directory`,
    `not_a_directory`, `no_space`, `permission_denied`, `too_large`, `name_too_long`, `os_error`),
    `path` the failing path relative to /home/user when known, and `written` the paths of a
    multi-file write that were written before it failed.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "os_error",
        path: str | None = None,
        written: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        self.written = tuple(written)


class SandboxUnavailableError(SandboxError):
    """The backend could not do the request now (busy service, network, rate limit)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    truncated: bool = False
    """True when stdout or stderr was cut to the backend's output bound (the text says so too)."""


class CommandFailedError(SandboxError):
    """The command ran and exited non-zero."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(f"command exited with code {result.exit_code}")
        self.result = result

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def exit_code(self) -> int:
        return self.result.exit_code


@dataclass(frozen=True)
class WriteEntry:
    path: str
    data: str | bytes


@dataclass(frozen=True)
class EntryInfo:
    name: str
    path: str
    type: Literal["file", "dir", "symlink"]
    size: int = 0


class CommandHandle(abc.ABC):
    """A command started with `background=True`."""

    pid: int

    @abc.abstractmethod
    async def wait(self) -> CommandResult:
        """Wait for the exit; raises `CommandFailedError` on a non-zero code."""

    @abc.abstractmethod
    async def kill(self) -> bool:
        """Kill the command and its children; False if it had already exited."""


class Commands(abc.ABC):
    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float = 60,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float = 60,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandHandle: ...

    @abc.abstractmethod
    async def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float = 60,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult | CommandHandle:
        """Run `cmd` with `bash -lc` as the sandbox user; `timeout` 0 means none (background)."""


class Files(abc.ABC):
    @abc.abstractmethod
    async def write(self, path: str, data: str | bytes) -> EntryInfo: ...

    @abc.abstractmethod
    async def write_files(self, files: list[WriteEntry]) -> list[EntryInfo]: ...

    @overload
    async def read(self, path: str, format: Literal["text"] = "text") -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @abc.abstractmethod
    async def read(self, path: str, format: Literal["text", "bytes"] = "text") -> str | bytes: ...

    @abc.abstractmethod
    async def list(self, path: str = HOME) -> list[EntryInfo]: ...

    @abc.abstractmethod
    async def exists(self, path: str) -> bool: ...


class Sandbox(abc.ABC):
    sandbox_id: str
    commands: Commands
    files: Files

    @abc.abstractmethod
    def get_host(self, port: int) -> str:
        """host:port (local) or hostname (E2B) that reaches `port` inside the sandbox."""

    @abc.abstractmethod
    def preview_url(self, port: int = 3000) -> str:
        """A URL a person can open in a browser."""

    @abc.abstractmethod
    async def set_timeout(self, timeout: float) -> None:
        """The sandbox now expires `timeout` seconds from now."""

    @abc.abstractmethod
    async def kill(self) -> bool:
        """Remove processes, mounts, ports and files; False if it was already gone."""

    @abc.abstractmethod
    async def is_running(self) -> bool: ...

    async def snapshot(self, index: Mapping[str, str]) -> WorkspaceSnapshot:
        """What the workspace changed relative to the template whose file hashes are `index`.

        This generic way lists and hashes the workspace with two commands and reads the changed
        files (E2B); the local backend reads its overlay's upper layer instead.
        """
        listing = parse_listing((await self.commands.run(LIST_COMMAND, timeout=120)).stdout)
        hashes = parse_hashes((await self.commands.run(HASH_COMMAND, timeout=120)).stdout)
        paths, symlinks, deleted = changed_paths(index, listing, hashes)
        snapshot = WorkspaceSnapshot(symlinks=symlinks, deleted=deleted)
        for path in paths:
            if listing[path].size > MAX_FILE_BYTES:
                snapshot.skipped.append(path)
                continue
            snapshot.files[path] = await self.files.read(path, format="bytes")
            snapshot.modes[path] = listing[path].mode
        return snapshot

    async def restore(self, snapshot: WorkspaceSnapshot) -> CommandResult | None:
        """Apply a snapshot to a workspace fresh from the template, deletions included.

        When the package files differ from the template's, `npm install` runs before returning,
        so the dev server finds the dependencies; its result is returned (a non-zero exit
        raises `CommandFailedError`).
        """
        if snapshot.files:
            await self.files.write_files(
                [WriteEntry(path, data) for path, data in sorted(snapshot.files.items())]
            )
        script = snapshot.restore_script()
        if script:
            await self.commands.run(script, cwd=HOME, timeout=120)
        if snapshot.needs_install():
            return await self.commands.run(INSTALL_COMMAND, cwd=HOME, timeout=INSTALL_TIMEOUT)
        return None


@dataclass
class SandboxBackend(abc.ABC):
    """Creates and reconnects sandboxes of one kind."""

    default_timeout: float = 1800
    metadata_defaults: dict[str, str] = field(default_factory=dict)

    @abc.abstractmethod
    async def create(
        self,
        template: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Sandbox: ...

    @abc.abstractmethod
    async def connect(self, sandbox_id: str, *, timeout: float | None = None) -> Sandbox:
        """Reconnect by id and extend its timeout; `SandboxNotFoundError` if gone or expired."""

    @abc.abstractmethod
    async def find(self, metadata: Mapping[str, str]) -> list[str]:
        """Ids of running sandboxes whose metadata holds all these pairs (E2B's list query)."""

    @abc.abstractmethod
    async def template_index(self, template: str | None = None) -> dict[str, str]:
        """sha256 of the template's files (see `sandboxes.snapshot.template_index`)."""

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Check the host and start background work (the local warm pool); the worker calls it."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Stop the backend's background work (the local warm pool); sandboxes stay up."""

    def host_counts(self) -> tuple[int, int]:
        """Live and pooled sandboxes on this host, for metrics; (0, 0) for a remote service."""
        return 0, 0

    async def kill_owned(self) -> list[str]:
        """Stop background work, then kill the sandboxes this object created or claimed.

        `worker.py --dev` calls it when it stops, so that a stop leaves nothing running; the
        production worker never does (its sandboxes outlive a restart). Returns the ids killed.
        A no-op by default: remote sandboxes (E2B) end by their own timeout.
        """
        await self.close()
        return []
