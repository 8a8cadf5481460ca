"""The E2B adapter, tested against a fake at the SDK boundary.

E2B's cloud is unreachable from here, so `sandboxes/e2b_backend.py` has only ever run against
the fake below: `e2b.AsyncSandbox` is replaced by `FakeAsyncSandbox`, which keeps sandboxes,
files and a clock in memory, records every call, and raises the real `e2b` exception classes.
What is tested is our side of the boundary: the arguments we pass (template, timeout, metadata,
API key, cwd, paths), reconnecting and extending the timeout, and the mapping of E2B's exceptions
to ours with the right `retryable` flag. Whether real E2B answers exactly as the fake does (for
example which exception an expired sandbox raises) has not been checked against the service.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import e2b
import httpx
import pytest
from e2b.sandbox.filesystem.filesystem import EntryInfo as E2BEntryInfo
from e2b.sandbox.filesystem.filesystem import FileType, WriteInfo

from agent.tools import execute_tool
from runtime.settings import Settings
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
    WriteEntry,
)
from sandboxes.e2b_backend import E2BBackend, resolve_path, translate

API_KEY = "e2b_test_key"
DOMAIN = "e2b.app"


@dataclass
class FakeSandboxState:
    sandbox_id: str
    template: str
    metadata: dict[str, str]
    expires_at: float
    killed: bool = False
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class FakeService:
    """What the fake E2B service knows: sandboxes, a clock, recorded calls, errors to inject."""

    now: float = 1000.0
    sandboxes: dict[str, FakeSandboxState] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail_next: dict[str, BaseException] = field(default_factory=dict)
    commands: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, name: str, **args: Any) -> None:
        self.calls.append((name, args))
        error = self.fail_next.pop(name, None)
        if error is not None:
            raise error

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def alive(self, sandbox_id: str) -> FakeSandboxState:
        state = self.sandboxes.get(sandbox_id)
        if state is None or state.killed or state.expires_at <= self.now:
            # What the proxy in front of envd answers for a sandbox that is gone.
            raise e2b.SandboxNotRunningException(f"sandbox {sandbox_id} was not found")
        return state


class FakeCommandHandle:
    def __init__(self, service: FakeService, pid: int, result: tuple[str, str, int]) -> None:
        self.service, self.pid, self._result, self.killed = service, pid, result, False

    async def wait(self) -> e2b.CommandResult:
        self.service.call("handle.wait", pid=self.pid)
        stdout, stderr, code = self._result
        if code != 0:
            raise e2b.CommandExitException(stdout=stdout, stderr=stderr, exit_code=code, error="")
        return e2b.CommandResult(stdout=stdout, stderr=stderr, exit_code=code, error=None)

    async def kill(self) -> bool:
        self.service.call("handle.kill", pid=self.pid)
        was_running, self.killed = not self.killed, True
        return was_running


class FakeCommands:
    def __init__(self, service: FakeService, sandbox_id: str) -> None:
        self.service, self.sandbox_id = service, sandbox_id

    async def run(self, cmd: str, **kwargs: Any) -> Any:
        self.service.call("commands.run", cmd=cmd, **kwargs)
        self.service.alive(self.sandbox_id)
        stdout, stderr, code = self.service.commands.get(cmd, ("", "", 0))
        if kwargs.get("background"):
            return FakeCommandHandle(self.service, 4242, (stdout, stderr, code))
        if kwargs.get("on_stdout") and stdout:
            await kwargs["on_stdout"](stdout)
        if kwargs.get("on_stderr") and stderr:
            await kwargs["on_stderr"](stderr)
        if code != 0:
            raise e2b.CommandExitException(stdout=stdout, stderr=stderr, exit_code=code, error="")
        return e2b.CommandResult(stdout=stdout, stderr=stderr, exit_code=0, error=None)


class FakeFiles:
    def __init__(self, service: FakeService, sandbox_id: str) -> None:
        self.service, self.sandbox_id = service, sandbox_id

    def _files(self) -> dict[str, bytes]:
        return self.service.alive(self.sandbox_id).files

    async def write(self, path: str, data: str | bytes) -> WriteInfo:
        self.service.call("files.write", path=path)
        self._files()[path] = data.encode() if isinstance(data, str) else bytes(data)
        return WriteInfo(name=path.rsplit("/", 1)[-1], type=FileType.FILE, path=path)

    async def write_files(self, files: list[dict[str, Any]]) -> list[WriteInfo]:
        self.service.call("files.write_files", paths=[f["path"] for f in files])
        infos = []
        for entry in files:
            data = entry["data"]
            self._files()[entry["path"]] = data.encode() if isinstance(data, str) else data
            name = entry["path"].rsplit("/", 1)[-1]
            infos.append(WriteInfo(name=name, type=FileType.FILE, path=entry["path"]))
        return infos

    async def read(self, path: str, format: str = "text") -> str | bytearray:
        self.service.call("files.read", path=path, format=format)
        if path not in self._files():
            raise e2b.FileNotFoundException(f"file {path} not found")
        data = self._files()[path]
        return data.decode() if format == "text" else bytearray(data)

    async def list(self, path: str, depth: int = 1) -> list[E2BEntryInfo]:
        self.service.call("files.list", path=path, depth=depth)
        prefix = path.rstrip("/") + "/"
        return [
            E2BEntryInfo(
                name=name[len(prefix) :],
                type=FileType.FILE,
                path=name,
                size=len(data),
                mode=0o644,
                permissions="rw-r--r--",
                owner="user",
                group="user",
                modified_time=datetime.now(UTC),
            )
            for name, data in sorted(self._files().items())
            if name.startswith(prefix) and "/" not in name[len(prefix) :]
        ]

    async def exists(self, path: str) -> bool:
        self.service.call("files.exists", path=path)
        return path in self._files()


@dataclass
class FakeSandboxInfo:
    sandbox_id: str


@dataclass
class FakeSandboxPaginator:
    pages: list[list[FakeSandboxInfo]]

    @property
    def has_next(self) -> bool:
        return bool(self.pages)

    async def next_items(self) -> list[FakeSandboxInfo]:
        return self.pages.pop(0)


class FakeAsyncSandbox:
    """Stands in for `e2b.AsyncSandbox`: same call shapes, real e2b exceptions."""

    service: FakeService

    def __init__(self, state: FakeSandboxState) -> None:
        self.sandbox_id = state.sandbox_id
        self.commands = FakeCommands(self.service, state.sandbox_id)
        self.files = FakeFiles(self.service, state.sandbox_id)

    @classmethod
    def _check_key(cls, api_key: str | None) -> None:
        if api_key != API_KEY:
            raise e2b.AuthenticationException("Invalid API key")

    @classmethod
    async def create(
        cls,
        template: str | None = None,
        timeout: int | None = None,
        metadata: dict[str, str] | None = None,
        **opts: Any,
    ) -> FakeAsyncSandbox:
        cls.service.call("create", template=template, timeout=timeout, metadata=metadata, **opts)
        cls._check_key(opts.get("api_key"))
        sandbox_id = f"isb{next(cls.service.ids)}"
        state = FakeSandboxState(
            sandbox_id, template or "base", dict(metadata or {}), cls.service.now + (timeout or 300)
        )
        cls.service.sandboxes[sandbox_id] = state
        return cls(state)

    @classmethod
    async def connect(
        cls, sandbox_id: str, timeout: int | None = None, **opts: Any
    ) -> FakeAsyncSandbox:
        cls.service.call("connect", sandbox_id=sandbox_id, timeout=timeout, **opts)
        cls._check_key(opts.get("api_key"))
        state = cls.service.sandboxes.get(sandbox_id)
        if state is None or state.killed or state.expires_at <= cls.service.now:
            raise e2b.SandboxNotFoundException(f"Sandbox {sandbox_id} not found")
        # E2B: a running sandbox's timeout only ever grows on connect.
        state.expires_at = max(state.expires_at, cls.service.now + (timeout or 300))
        return cls(state)

    @classmethod
    def list(cls, query: e2b.SandboxQuery | None = None, **opts: Any) -> FakeSandboxPaginator:
        """Like E2B: not a coroutine; the paginator fetches pages of two."""
        cls.service.call("list", query=query, **opts)
        cls._check_key(opts.get("api_key"))
        wanted = (query.metadata if query else None) or {}
        running = query is not None and query.state == [e2b.SandboxState.RUNNING]
        found = [
            FakeSandboxInfo(state.sandbox_id)
            for state in cls.service.sandboxes.values()
            if wanted.items() <= state.metadata.items()
            and (not running or (not state.killed and state.expires_at > cls.service.now))
        ]
        return FakeSandboxPaginator([found[i : i + 2] for i in range(0, len(found), 2)])

    def get_host(self, port: int) -> str:
        return f"{port}-{self.sandbox_id}.{DOMAIN}"

    async def set_timeout(self, timeout: int) -> None:
        self.service.call("set_timeout", sandbox_id=self.sandbox_id, timeout=timeout)
        self.service.alive(self.sandbox_id).expires_at = self.service.now + timeout

    async def kill(self) -> bool:
        self.service.call("kill", sandbox_id=self.sandbox_id)
        state = self.service.sandboxes.get(self.sandbox_id)
        if state is None or state.killed:
            return False
        state.killed = True
        return True

    async def is_running(self) -> bool:
        self.service.call("is_running", sandbox_id=self.sandbox_id)
        state = self.service.sandboxes.get(self.sandbox_id)
        return bool(state and not state.killed and state.expires_at > self.service.now)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> FakeService:
    fake = FakeService()
    sandbox_class = type("FakeAsyncSandboxBound", (FakeAsyncSandbox,), {"service": fake})
    monkeypatch.setattr(e2b, "AsyncSandbox", sandbox_class)
    return fake


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "e2b_api_key": API_KEY,
        "qai_e2b_template": "qai-nextjs-t4",
        "qai_sandbox_timeout": 1800,
        "qai_sandbox_backend": "e2b",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def backend(service: FakeService) -> E2BBackend:
    return E2BBackend(make_settings(), metadata_defaults={"app": "qai"})


# --- creating and reconnecting ---------------------------------------------------------------


async def test_create_uses_the_template_key_and_timeout_from_settings(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create("nextjs", metadata={"project_id": "p1"})

    name, args = service.calls[-1]
    assert name == "create"
    assert args == {
        "template": "qai-nextjs-t4",
        "timeout": 1800,
        "metadata": {"app": "qai", "project_id": "p1"},
        "api_key": API_KEY,
    }
    assert sandbox.sandbox_id == "isb1"
    assert sandbox.get_host(3000) == "3000-isb1.e2b.app"
    assert sandbox.preview_url(3000) == "https://3000-isb1.e2b.app"


async def test_create_passes_other_template_names_through(
    service: FakeService, backend: E2BBackend
) -> None:
    await backend.create()
    await backend.create("my-own-template", timeout=90.5)
    assert service.calls[0][1]["template"] == "qai-nextjs-t4"
    assert service.calls[1][1]["template"] == "my-own-template"
    assert service.calls[1][1]["timeout"] == 91  # whole seconds, rounded up


async def test_find_asks_for_running_sandboxes_by_metadata_across_pages(
    service: FakeService, backend: E2BBackend
) -> None:
    wanted = [(await backend.create(metadata={"run_id": "r1"})).sandbox_id for _ in range(3)]
    await backend.create(metadata={"run_id": "r2"})
    gone = await backend.create(metadata={"run_id": "r1"})
    await gone.kill()

    assert await backend.find({"run_id": "r1"}) == wanted
    name, args = service.calls[-1]
    assert name == "list"
    assert args["api_key"] == API_KEY
    assert args["query"].metadata == {"run_id": "r1"}


async def test_find_maps_e2b_errors(service: FakeService, backend: E2BBackend) -> None:
    service.fail_next["list"] = e2b.RateLimitException("slow down")
    with pytest.raises(SandboxUnavailableError) as caught:
        await backend.find({"run_id": "r1"})
    assert caught.value.retryable is True


async def test_missing_api_key_fails_before_calling_e2b(service: FakeService) -> None:
    backend = E2BBackend(make_settings(e2b_api_key=None))
    with pytest.raises(SandboxUnavailableError, match="E2B_API_KEY") as caught:
        await backend.create()
    assert caught.value.retryable is False
    assert service.calls == []


async def test_rejected_api_key_is_not_retryable(service: FakeService) -> None:
    # AuthenticationException is not a SandboxException: a mapping keyed on that would miss it.
    assert not issubclass(e2b.AuthenticationException, e2b.SandboxException)
    backend = E2BBackend(make_settings(e2b_api_key="wrong"))
    with pytest.raises(SandboxUnavailableError, match="API key") as caught:
        await backend.create()
    assert caught.value.retryable is False
    assert isinstance(caught.value.__cause__, e2b.AuthenticationException)


@pytest.mark.parametrize(
    "error",
    [e2b.ServiceBusyException("no capacity"), e2b.RateLimitException("429: slow down")],
    ids=["service-busy", "rate-limit"],
)
async def test_busy_or_rate_limited_create_is_retryable(
    service: FakeService, backend: E2BBackend, error: Exception
) -> None:
    service.fail_next["create"] = error
    with pytest.raises(SandboxUnavailableError) as caught:
        await backend.create()
    assert caught.value.retryable is True
    assert caught.value.__cause__ is error
    # Nothing is retried inside the adapter: Temporal retries the activity.
    assert service.names() == ["create"]


async def test_a_slow_start_is_retried_and_a_broken_template_is_not(
    service: FakeService, backend: E2BBackend
) -> None:
    """The same split as the local backend's: slowness may pass, a bad template will not."""
    service.fail_next["create"] = e2b.TimeoutException("request timed out")
    with pytest.raises(SandboxStartTimeoutError) as slow:
        await backend.create()
    assert slow.value.retryable is True

    service.fail_next["create"] = e2b.NotFoundException("template 'qai-nextjs-t4' not found")
    with pytest.raises(SandboxTemplateError) as broken:
        await backend.create()
    assert broken.value.retryable is False


async def test_reconnect_extends_the_timeout(service: FakeService, backend: E2BBackend) -> None:
    created = await backend.create(timeout=60)
    service.now += 50  # ten seconds left

    again = await backend.connect(created.sandbox_id)

    assert service.calls[-1] == (
        "connect",
        {"sandbox_id": created.sandbox_id, "timeout": 1800, "api_key": API_KEY},
    )
    assert service.sandboxes[created.sandbox_id].expires_at == service.now + 1800
    assert again.sandbox_id == created.sandbox_id
    service.now += 600  # well past the original 60 s
    assert await again.is_running()
    assert (await again.commands.run("true")).exit_code == 0


async def test_reconnect_to_unknown_or_expired_sandbox_is_not_found(
    service: FakeService, backend: E2BBackend
) -> None:
    with pytest.raises(SandboxNotFoundError):
        await backend.connect("isb-never-existed")

    created = await backend.create(timeout=30)
    service.now += 31
    with pytest.raises(SandboxNotFoundError) as caught:
        await backend.connect(created.sandbox_id)
    assert caught.value.retryable is False


async def test_operations_on_an_expired_sandbox_say_not_found(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create(timeout=30)
    service.now += 31
    with pytest.raises(SandboxNotFoundError):
        await sandbox.commands.run("ls")
    with pytest.raises(SandboxNotFoundError):
        await sandbox.files.read("app/page.tsx")
    assert await sandbox.is_running() is False


async def test_set_timeout_and_kill(service: FakeService, backend: E2BBackend) -> None:
    sandbox = await backend.create(timeout=60)
    await sandbox.set_timeout(120.2)
    assert service.calls[-1] == ("set_timeout", {"sandbox_id": "isb1", "timeout": 121})
    assert service.sandboxes["isb1"].expires_at == service.now + 121

    assert await sandbox.kill() is True
    assert await sandbox.kill() is False
    assert await sandbox.is_running() is False
    with pytest.raises(SandboxNotFoundError):
        await sandbox.set_timeout(60)


# --- commands ---------------------------------------------------------------------------------


async def test_run_returns_output_and_streams_it(service: FakeService, backend: E2BBackend) -> None:
    service.commands["npm run lint"] = ("ok\n", "warn\n", 0)
    sandbox = await backend.create()
    seen: list[tuple[str, str]] = []

    async def out(text: str) -> None:
        seen.append(("out", text))

    async def err(text: str) -> None:
        seen.append(("err", text))

    result = await sandbox.commands.run(
        "npm run lint", envs={"CI": "1"}, timeout=120, on_stdout=out, on_stderr=err
    )

    assert (result.stdout, result.stderr, result.exit_code) == ("ok\n", "warn\n", 0)
    assert seen == [("out", "ok\n"), ("err", "warn\n")]
    _, args = service.calls[-1]
    assert args["cwd"] == "/home/user"
    assert args["envs"] == {"CI": "1"}
    assert args["timeout"] == 120
    assert args["background"] is False


async def test_non_zero_exit_raises_command_failed_with_the_result(
    service: FakeService, backend: E2BBackend
) -> None:
    service.commands["npm run build"] = ("partial\n", "Type error\n", 2)
    sandbox = await backend.create()
    with pytest.raises(CommandFailedError) as caught:
        await sandbox.commands.run("npm run build", cwd="app")
    assert caught.value.exit_code == 2
    assert caught.value.stdout == "partial\n"
    assert caught.value.stderr == "Type error\n"
    assert service.calls[-1][1]["cwd"] == "/home/user/app"


async def test_command_timeout_is_retryable_timeout(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create()
    service.fail_next["commands.run"] = e2b.TimeoutException("deadline_exceeded")
    with pytest.raises(SandboxTimeoutError) as caught:
        await sandbox.commands.run("sleep 1000", timeout=1)
    assert caught.value.retryable is True


async def test_cwd_outside_home_is_refused_without_calling_e2b(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create()
    before = len(service.calls)
    with pytest.raises(InvalidPathError):
        await sandbox.commands.run("ls", cwd="/etc")
    assert len(service.calls) == before


async def test_background_command_handle(service: FakeService, backend: E2BBackend) -> None:
    service.commands["npm run dev"] = ("ready\n", "", 0)
    service.commands["false"] = ("", "nope\n", 1)
    sandbox = await backend.create()

    handle = await sandbox.commands.run("npm run dev", background=True, timeout=0)
    assert handle.pid == 4242
    assert service.calls[-1][1]["timeout"] == 0
    assert (await handle.wait()).stdout == "ready\n"
    assert await handle.kill() is True
    assert await handle.kill() is False

    failing = await sandbox.commands.run("false", background=True)
    with pytest.raises(CommandFailedError) as caught:
        await failing.wait()
    assert caught.value.stderr == "nope\n"


# --- files ------------------------------------------------------------------------------------


async def test_files_round_trip(service: FakeService, backend: E2BBackend) -> None:
    sandbox = await backend.create()
    info = await sandbox.files.write("app/page.tsx", "export default 1\n")
    assert (info.path, info.type, info.size) == ("/home/user/app/page.tsx", "file", 17)
    await sandbox.files.write_files(
        [WriteEntry("/home/user/app/a.ts", "a"), WriteEntry("app/logo.bin", b"\x00\x01")]
    )

    assert await sandbox.files.read("/home/user/app/page.tsx") == "export default 1\n"
    assert await sandbox.files.read("app/logo.bin", format="bytes") == b"\x00\x01"
    assert await sandbox.files.exists("app/a.ts")
    assert not await sandbox.files.exists("app/missing.ts")
    listed = await sandbox.files.list("app")
    assert [(e.name, e.path, e.type, e.size) for e in listed] == [
        ("a.ts", "/home/user/app/a.ts", "file", 1),
        ("logo.bin", "/home/user/app/logo.bin", "file", 2),
        ("page.tsx", "/home/user/app/page.tsx", "file", 17),
    ]
    assert ("files.write_files", {"paths": ["/home/user/app/a.ts", "/home/user/app/logo.bin"]}) in (
        service.calls
    )


async def test_reading_a_missing_file_is_file_not_found(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create()
    with pytest.raises(SandboxFileNotFoundError) as caught:
        await sandbox.files.read("app/nope.tsx")
    assert isinstance(caught.value, FileNotFoundError)
    assert not isinstance(caught.value, SandboxNotFoundError)


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "app/../../root", ""])
async def test_paths_outside_home_are_refused_without_calling_e2b(
    service: FakeService, backend: E2BBackend, path: str
) -> None:
    sandbox = await backend.create()
    before = len(service.calls)
    with pytest.raises(InvalidPathError):
        await sandbox.files.write(path, "x")
    with pytest.raises(InvalidPathError):
        await sandbox.files.read(path)
    assert len(service.calls) == before


async def test_invalid_argument_on_a_path_is_invalid_path(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create()
    service.fail_next["files.write"] = e2b.InvalidArgumentException("path is a directory")
    with pytest.raises(InvalidPathError, match="path is a directory"):
        await sandbox.files.write("app", "x")


async def test_a_full_disk_and_binary_files_reach_the_model_as_tool_results(
    service: FakeService, backend: E2BBackend
) -> None:
    sandbox = await backend.create()
    await sandbox.files.write("public/logo.png", b"\x89PNG\x00\xff")
    await sandbox.files.write("app/page.tsx", "export default 1\n")
    service.fail_next["files.write_files"] = e2b.NotEnoughSpaceException("no space left")

    wrote = await execute_tool(
        sandbox,
        "createOrUpdateFiles",
        json.dumps({"files": [{"path": "app/page.tsx", "content": "x"}]}),
    )
    read = await execute_tool(
        sandbox, "readFiles", json.dumps({"files": ["public/logo.png", "app/page.tsx"]})
    )

    assert not wrote.ok and "disk is full" in wrote.content and "du -sh" in wrote.content
    results = {item["path"]: item for item in json.loads(read.content)}
    assert results["public/logo.png"]["error"] == "binary file, 6 bytes; cannot be shown as text"
    assert results["app/page.tsx"]["content"] == "export default 1\n"


# --- the mapping itself -----------------------------------------------------------------------

MAPPING = [
    (e2b.TimeoutException("request timed out"), "sandbox", SandboxTimeoutError, True),
    (e2b.SandboxNotRunningException("was not found"), "command", SandboxNotFoundError, False),
    (e2b.SandboxUnreachableException("port is not open"), "file", SandboxUnavailableError, True),
    (e2b.SandboxNotFoundException("Sandbox x not found"), "sandbox", SandboxNotFoundError, False),
    (e2b.NotFoundException("not found"), "sandbox", SandboxNotFoundError, False),
    (e2b.NotFoundException("not found"), "file", SandboxFileNotFoundError, False),
    (e2b.FileNotFoundException("no such file"), "file", SandboxFileNotFoundError, False),
    (e2b.InvalidArgumentException("bad path"), "file", InvalidPathError, False),
    (e2b.InvalidArgumentException("bad metadata"), "sandbox", SandboxUnavailableError, False),
    (e2b.AuthenticationException("bad key"), "sandbox", SandboxUnavailableError, False),
    (e2b.ServiceBusyException("503"), "sandbox", SandboxUnavailableError, True),
    (e2b.RateLimitException("429"), "command", SandboxUnavailableError, True),
    (e2b.NotEnoughSpaceException("disk full"), "file", WorkspaceError, False),
    (e2b.NotEnoughSpaceException("disk full"), "command", WorkspaceError, False),
    (e2b.NotEnoughSpaceException("disk full"), "sandbox", SandboxUnavailableError, False),
    (e2b.TemplateException("old envd"), "sandbox", SandboxTemplateError, False),
    (e2b.TemplateException("old envd"), "create", SandboxTemplateError, False),
    (e2b.NotFoundException("template x not found"), "create", SandboxTemplateError, False),
    (e2b.TimeoutException("request timed out"), "create", SandboxStartTimeoutError, True),
    (e2b.ServiceBusyException("503"), "create", SandboxUnavailableError, True),
    (e2b.SandboxException("500 internal"), "sandbox", SandboxUnavailableError, True),
    (httpx.ConnectError("connection refused"), "sandbox", SandboxUnavailableError, True),
]


@pytest.mark.parametrize(
    ("error", "op", "expected", "retryable"),
    MAPPING,
    ids=[f"{type(e).__name__}-{op}" for e, op, _, _ in MAPPING],
)
def test_mapping(error: Exception, op: Any, expected: type[SandboxError], retryable: bool) -> None:
    ours = translate(error, op=op)
    assert type(ours) is expected
    assert ours.retryable is retryable


def test_command_exit_maps_to_command_failed_before_its_base_classes() -> None:
    error = e2b.CommandExitException(stdout="o", stderr="e", exit_code=3, error="exit status 3")
    ours = translate(error, op="command")
    assert isinstance(ours, CommandFailedError)
    assert (ours.stdout, ours.stderr, ours.exit_code) == ("o", "e", 3)


def test_other_errors_pass_through_unchanged() -> None:
    error = ValueError("a bug of ours")
    assert translate(error, op="sandbox") is error


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("app/page.tsx", "/home/user/app/page.tsx"),
        ("/home/user", "/home/user"),
        ("./app/../lib/utils.ts", "/home/user/lib/utils.ts"),
        ("/home/user/./components//ui/button.tsx", "/home/user/components/ui/button.tsx"),
    ],
)
def test_resolve_path(path: str, resolved: str) -> None:
    assert resolve_path(path) == resolved


@pytest.mark.parametrize("path", ["/home/username/x", "/home", "..", "a\0b"])
def test_resolve_path_refuses(path: str) -> None:
    with pytest.raises(InvalidPathError):
        resolve_path(path)
