"""The E2B backend: a thin adapter from our sandbox interface to `e2b.AsyncSandbox`.

It adds three things to the SDK: the template name and API key come from settings, reconnecting
by id extends the sandbox's timeout, and E2B's exceptions become ours (`sandboxes.base`), each
with `retryable` set so Temporal knows whether retrying the activity can help. It does no retrying
of its own beyond the SDK's defaults.

`e2b.AsyncSandbox` is looked up at call time so tests can replace it at the SDK boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import posixpath
from collections.abc import Iterator, Mapping
from typing import Literal, NoReturn

import e2b
import httpx

from runtime.logs import get_logger
from runtime.settings import Settings
from sandboxes.base import (
    HOME,
    CommandFailedError,
    CommandHandle,
    CommandResult,
    Commands,
    EntryInfo,
    Files,
    InvalidPathError,
    OutputCallback,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    SandboxStartTimeoutError,
    SandboxTemplateError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WorkspaceError,
    WriteEntry,
)

log = get_logger(__name__)

# The logical template name callers use; on E2B it means the template named in settings.
DEFAULT_TEMPLATE = "nextjs"

Operation = Literal["create", "sandbox", "command", "file"]
"""What was being done: `create` (starting a sandbox from a template) maps timeouts and template
errors as the local backend's start does."""


def translate(error: BaseException, *, op: Operation, subject: str = "") -> BaseException:
    """Our exception for an E2B (or transport) exception; anything else is returned unchanged.

    The order matters: CommandExitException, SandboxNotRunningException and
    SandboxUnreachableException are subclasses of broader E2B classes, and
    AuthenticationException and ServiceBusyException are not SandboxExceptions at all.
    """
    about = f" ({subject})" if subject else ""
    if isinstance(error, e2b.CommandExitException):
        return CommandFailedError(
            CommandResult(
                stdout=error.stdout or "",
                stderr=error.stderr or "",
                exit_code=error.exit_code,
            )
        )
    if isinstance(error, e2b.AuthenticationException):
        return SandboxUnavailableError(
            f"E2B rejected the API key (check E2B_API_KEY): {error}", retryable=False
        )
    if isinstance(error, e2b.ServiceBusyException):
        return SandboxUnavailableError(f"E2B is busy, try again shortly: {error}", retryable=True)
    if isinstance(error, e2b.RateLimitException):
        return SandboxUnavailableError(f"E2B rate limit reached: {error}", retryable=True)
    if op == "create":
        if isinstance(error, e2b.TemplateException | e2b.NotFoundException):
            return SandboxTemplateError(f"E2B cannot start the template{about}: {error}")
        if isinstance(error, e2b.TimeoutException):
            return SandboxStartTimeoutError(f"E2B sandbox start timed out{about}: {error}")
    if isinstance(error, e2b.FileNotFoundException):
        return SandboxFileNotFoundError(f"no such file or directory{about}: {error}")
    if isinstance(error, e2b.SandboxNotRunningException | e2b.NotFoundException):
        if op == "file" and not isinstance(
            error, e2b.SandboxNotRunningException | e2b.SandboxNotFoundException
        ):
            return SandboxFileNotFoundError(f"no such file or directory{about}: {error}")
        return SandboxNotFoundError(f"E2B sandbox not found or expired{about}: {error}")
    if isinstance(error, e2b.SandboxUnreachableException):
        return SandboxUnavailableError(f"E2B sandbox unreachable{about}: {error}", retryable=True)
    if isinstance(error, e2b.TimeoutException):
        return SandboxTimeoutError(f"E2B {op} timed out{about}: {error}")
    if isinstance(error, e2b.InvalidArgumentException):
        if op in ("file", "command"):
            return InvalidPathError(f"E2B rejected the path{about}: {error}")
        return SandboxUnavailableError(f"E2B rejected the request: {error}", retryable=False)
    if isinstance(error, e2b.NotEnoughSpaceException):
        if op in ("file", "command"):
            return WorkspaceError(f"the sandbox's disk is full{about}: {error}", reason="no_space")
        return SandboxUnavailableError(f"E2B sandbox disk is full: {error}", retryable=False)
    if isinstance(error, e2b.TemplateException):
        return SandboxTemplateError(f"E2B template too old for this SDK{about}: {error}")
    if isinstance(error, e2b.GuestUnresponsiveException):
        return SandboxUnavailableError(f"E2B cannot use this sandbox: {error}", retryable=False)
    if isinstance(error, e2b.SandboxException):
        return SandboxUnavailableError(f"E2B error{about}: {error}", retryable=True)
    if isinstance(error, httpx.TransportError):
        return SandboxUnavailableError(f"cannot reach E2B: {error}", retryable=True)
    return error


@contextlib.contextmanager
def mapped(op: Operation, subject: str = "") -> Iterator[None]:
    """Re-raise E2B exceptions as ours, chained to the original."""
    try:
        yield
    except SandboxError:
        raise
    except Exception as error:
        ours = translate(error, op=op, subject=subject)
        if ours is error:
            raise
        raise ours from error


def resolve_path(path: str) -> str:
    """Absolute path inside /home/user, as the local backend resolves it; else InvalidPathError.

    E2B itself would accept any path in its VM; refusing the same paths on both backends keeps
    the agent's behaviour the same whichever runs.
    """
    if not path or "\0" in path:
        raise InvalidPathError(f"invalid path {path!r}")
    joined = posixpath.normpath(posixpath.join(HOME, path))
    if joined != HOME and not joined.startswith(HOME + "/"):
        raise InvalidPathError(f"path {path!r} is outside {HOME}")
    return joined


def _entry(info: object, size: int = 0) -> EntryInfo:
    kind = getattr(getattr(info, "type", None), "value", None) or "file"
    return EntryInfo(
        name=str(getattr(info, "name", "")),
        path=str(getattr(info, "path", "")),
        type=kind if kind in ("file", "dir", "symlink") else "file",
        size=int(getattr(info, "size", size) or size),
    )


def _data_size(data: str | bytes) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)


class E2BCommandHandle(CommandHandle):
    def __init__(self, handle: e2b.AsyncCommandHandle) -> None:
        self._handle = handle
        self.pid = int(handle.pid)

    async def wait(self) -> CommandResult:
        with mapped("command", f"pid {self.pid}"):
            done = await self._handle.wait()
        return CommandResult(
            stdout=done.stdout or "", stderr=done.stderr or "", exit_code=done.exit_code
        )

    async def kill(self) -> bool:
        with mapped("command", f"pid {self.pid}"):
            return bool(await self._handle.kill())


class E2BCommands(Commands):
    def __init__(self, sandbox: e2b.AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def run(  # type: ignore[override]
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
        workdir = resolve_path(cwd or HOME)
        with mapped("command", cmd[:80]):
            done = await self._sandbox.commands.run(
                cmd,
                background=background,
                envs=dict(envs or {}),
                cwd=workdir,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                timeout=timeout,
            )
        if background:
            return E2BCommandHandle(done)
        return CommandResult(
            stdout=done.stdout or "", stderr=done.stderr or "", exit_code=done.exit_code
        )


class E2BFiles(Files):
    def __init__(self, sandbox: e2b.AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def write(self, path: str, data: str | bytes) -> EntryInfo:
        target = resolve_path(path)
        with mapped("file", target):
            info = await self._sandbox.files.write(target, data)
        return _entry(info, _data_size(data))

    async def write_files(self, files: list[WriteEntry]) -> list[EntryInfo]:
        entries = [{"path": resolve_path(f.path), "data": f.data} for f in files]
        with mapped("file", ", ".join(e["path"] for e in entries)[:200]):
            infos = await self._sandbox.files.write_files(entries)
        return [_entry(i, _data_size(f.data)) for i, f in zip(infos, files, strict=False)]

    async def read(  # type: ignore[override]
        self, path: str, format: Literal["text", "bytes"] = "text"
    ) -> str | bytes:
        target = resolve_path(path)
        with mapped("file", target):
            content = await self._sandbox.files.read(target, format=format)
        return bytes(content) if format == "bytes" else content

    async def list(self, path: str = HOME) -> list[EntryInfo]:
        target = resolve_path(path)
        with mapped("file", target):
            infos = await self._sandbox.files.list(target, depth=1)
        return [_entry(i) for i in infos]

    async def exists(self, path: str) -> bool:
        target = resolve_path(path)
        with mapped("file", target):
            return bool(await self._sandbox.files.exists(target))


class E2BSandbox(Sandbox):
    def __init__(self, sandbox: e2b.AsyncSandbox) -> None:
        self._sandbox = sandbox
        self.sandbox_id = sandbox.sandbox_id
        self.commands = E2BCommands(sandbox)
        self.files = E2BFiles(sandbox)

    def get_host(self, port: int) -> str:
        return self._sandbox.get_host(port)

    def preview_url(self, port: int = 3000) -> str:
        return f"https://{self.get_host(port)}"

    async def set_timeout(self, timeout: float) -> None:
        with mapped("sandbox", self.sandbox_id):
            await self._sandbox.set_timeout(_seconds(timeout))

    async def kill(self) -> bool:
        with mapped("sandbox", self.sandbox_id):
            return bool(await self._sandbox.kill())

    async def is_running(self) -> bool:
        try:
            with mapped("sandbox", self.sandbox_id):
                return bool(await self._sandbox.is_running())
        except SandboxNotFoundError:
            return False


def _seconds(timeout: float) -> int:
    """E2B takes whole seconds; round up so a short timeout never becomes 0 (no limit)."""
    return max(1, int(-(-timeout // 1)))


class E2BBackend(SandboxBackend):
    """Creates and reconnects E2B sandboxes from the template named by QAI_E2B_TEMPLATE."""

    def __init__(self, settings: Settings, *, metadata_defaults: Mapping[str, str] | None = None):
        super().__init__(
            default_timeout=float(settings.qai_sandbox_timeout),
            metadata_defaults=dict(metadata_defaults or {}),
        )
        self.settings = settings

    def _api_key(self) -> str:
        key = self.settings.e2b_api_key
        if key is None or not key.get_secret_value():
            _unavailable("E2B_API_KEY is not set; it is needed with QAI_SANDBOX_BACKEND=e2b")
        return key.get_secret_value()

    def template_name(self, template: str | None) -> str:
        """`nextjs` (our template's name) means the E2B template from settings."""
        if template in (None, DEFAULT_TEMPLATE):
            return self.settings.qai_e2b_template
        return template

    async def template_index(self, template: str | None = None) -> dict[str, str]:
        """The E2B image is built from the same sources (and lock file) as the local template."""
        return await asyncio.to_thread(_source_index, template or DEFAULT_TEMPLATE)

    async def create(
        self,
        template: str | None = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Sandbox:
        name = self.template_name(template)
        with mapped("create", f"template {name}"):
            sandbox = await e2b.AsyncSandbox.create(
                template=name,
                timeout=_seconds(timeout or self.default_timeout),
                metadata={**self.metadata_defaults, **(metadata or {})},
                api_key=self._api_key(),
            )
        log.info("sandbox created", backend="e2b", sandbox_id=sandbox.sandbox_id, template=name)
        return E2BSandbox(sandbox)

    async def connect(
        self,
        sandbox_id: str,
        *,
        timeout: float | None = None,
    ) -> Sandbox:
        """Reconnect by id; E2B extends a running sandbox's timeout to `timeout` from now."""
        with mapped("sandbox", sandbox_id):
            sandbox = await e2b.AsyncSandbox.connect(
                sandbox_id,
                timeout=_seconds(timeout or self.default_timeout),
                api_key=self._api_key(),
            )
        return E2BSandbox(sandbox)

    async def find(self, metadata: Mapping[str, str]) -> list[str]:
        query = e2b.SandboxQuery(metadata=dict(metadata), state=[e2b.SandboxState.RUNNING])
        found: list[str] = []
        with mapped("sandbox", "list by metadata"):
            paginator = e2b.AsyncSandbox.list(query=query, api_key=self._api_key())
            while paginator.has_next:
                found += [info.sandbox_id for info in await paginator.next_items()]
        return found

    async def close(self) -> None:
        """Nothing to stop: E2B keeps no pool here (its templates start from a snapshot)."""


@functools.cache
def _source_index(name: str) -> dict[str, str]:
    from sandboxes.manifest import NOT_COPIED, template_source
    from sandboxes.snapshot import template_index

    index = template_index(template_source(name))
    return {path: digest for path, digest in index.items() if path not in NOT_COPIED}


def _unavailable(message: str) -> NoReturn:
    raise SandboxUnavailableError(message, retryable=False)
