"""`Sandbox`, `Commands` and `Files` of the local backend, talking to envd inside bubblewrap."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from sandboxes.base import (
    HOME,
    CommandFailedError,
    CommandHandle,
    CommandResult,
    Commands,
    EntryInfo,
    Files,
    OutputCallback,
    Sandbox,
    SandboxNotFoundError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WriteEntry,
)
from sandboxes.local.client import EnvdClient, error_from
from sandboxes.local.layout import Layout, read_state, state_alive, update_state, upper_dir
from sandboxes.local.upper import read_upper
from sandboxes.snapshot import MAX_SNAPSHOT_BYTES, WorkspaceSnapshot

HOST_GRACE = 10.0
"""Seconds the host waits past a command's timeout for envd to report the kill itself."""


async def _call(callback: OutputCallback | None, text: str) -> None:
    if callback is not None:
        value = callback(text)
        if inspect.isawaitable(value):
            await value


def _result(event: dict[str, Any], cmd: str, timeout: float) -> CommandResult:
    result = CommandResult(
        stdout=event["stdout"],
        stderr=event["stderr"],
        exit_code=int(event["code"]),
        truncated=bool(event["truncated"]),
    )
    if event.get("timed_out"):
        error = SandboxTimeoutError(
            f"command timed out after {timeout:g} s and was killed with its children: {cmd[:200]}"
        )
        error.result = result  # type: ignore[attr-defined]
        raise error
    if result.exit_code != 0:
        raise CommandFailedError(result)
    return result


class LocalCommandHandle(CommandHandle):
    def __init__(self, pid: int, task: asyncio.Task[CommandResult], client: EnvdClient) -> None:
        self.pid = pid
        self._task = task
        self._client = client

    async def wait(self) -> CommandResult:
        return await asyncio.shield(self._task)

    async def kill(self) -> bool:
        if self._task.done():
            return False
        reply = await self._client.request({"op": "kill", "pid": self.pid}, timeout=10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        return bool(reply.get("killed"))


class LocalCommands(Commands):
    def __init__(self, client: EnvdClient) -> None:
        self._client = client

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
        reader, writer = await self._client.open()
        request = {
            "op": "exec",
            "cmd": cmd,
            "cwd": cwd or HOME,
            "envs": dict(envs or {}),
            "timeout": timeout,
        }
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        try:
            first = await self._event(reader, writer, 30)
        except TimeoutError:
            writer.close()
            raise SandboxTimeoutError(
                f"sandbox {self._client.sandbox_id} did not start the command within 30 s"
            ) from None
        if first["t"] == "error":
            writer.close()
            raise error_from(first)
        pid = int(first["pid"])
        task = asyncio.create_task(
            self._stream(reader, writer, pid, cmd, timeout, on_stdout, on_stderr)
        )
        if background:
            return LocalCommandHandle(pid, task, self._client)
        return await task

    async def _event(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float | None,
    ) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.IncompleteReadError) as error:
            writer.close()
            raise SandboxUnavailableError(
                f"lost sandbox {self._client.sandbox_id}: {error}"
            ) from None
        if not line:
            writer.close()
            if not self._client.alive():
                raise SandboxNotFoundError(
                    f"sandbox {self._client.sandbox_id} stopped while the command ran"
                )
            raise SandboxUnavailableError(
                f"sandbox {self._client.sandbox_id} closed the connection"
            )
        return json.loads(line)

    async def _stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pid: int,
        cmd: str,
        timeout: float,
        on_stdout: OutputCallback | None,
        on_stderr: OutputCallback | None,
    ) -> CommandResult:
        deadline = time.monotonic() + timeout + HOST_GRACE if timeout > 0 else None
        try:
            while True:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.01)
                try:
                    event = await self._event(reader, writer, left)
                except TimeoutError:
                    with contextlib.suppress(Exception):
                        await self._client.request({"op": "kill", "pid": pid}, timeout=5)
                    raise SandboxTimeoutError(
                        f"command did not finish within {timeout:g} s and was killed: {cmd[:200]}"
                    ) from None
                kind = event["t"]
                if kind == "out":
                    await _call(on_stdout, event["d"])
                elif kind == "err":
                    await _call(on_stderr, event["d"])
                elif kind == "exit":
                    return _result(event, cmd, timeout)
        finally:
            writer.close()


class LocalFiles(Files):
    def __init__(self, client: EnvdClient) -> None:
        self._client = client

    @staticmethod
    def _entry(raw: dict[str, Any]) -> EntryInfo:
        return EntryInfo(name=raw["name"], path=raw["path"], type=raw["type"], size=raw["size"])

    async def write(self, path: str, data: str | bytes) -> EntryInfo:
        return (await self.write_files([WriteEntry(path, data)]))[0]

    async def write_files(self, files: list[WriteEntry]) -> list[EntryInfo]:
        payload = [
            {
                "path": f.path,
                "data": base64.b64encode(
                    f.data.encode() if isinstance(f.data, str) else f.data
                ).decode(),
            }
            for f in files
        ]
        reply = await self._client.request({"op": "write", "files": payload}, timeout=120)
        return [self._entry(e) for e in reply["entries"]]

    async def read(  # type: ignore[override]
        self, path: str, format: Literal["text", "bytes"] = "text"
    ) -> str | bytes:
        reply = await self._client.request({"op": "read", "path": path}, timeout=120)
        data = base64.b64decode(reply["data"])
        return data if format == "bytes" else data.decode("utf-8", "replace")

    async def list(self, path: str = HOME) -> list[EntryInfo]:
        reply = await self._client.request({"op": "list", "path": path})
        return [self._entry(e) for e in reply["entries"]]

    async def exists(self, path: str) -> bool:
        reply = await self._client.request({"op": "exists", "path": path})
        return bool(reply["exists"])


class LocalSandbox(Sandbox):
    def __init__(
        self, kill: Callable[[str], Awaitable[bool]], layout: Layout, state: dict[str, Any]
    ) -> None:
        """`kill` is the backend's teardown by id (passed in: this module needs no backend)."""
        self.sandbox_id = layout.sandbox_id
        self._kill = kill
        self._layout = layout
        self._state = state
        self._client = EnvdClient(self.sandbox_id, layout.envd_sock, self._alive)
        self.commands = LocalCommands(self._client)
        self.files = LocalFiles(self._client)

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._state.get("metadata", {}))

    def _alive(self) -> bool:
        try:
            state = read_state(self._layout.state)
        except (OSError, ValueError):
            return False
        return state_alive(state)

    def get_host(self, port: int) -> str:
        host_port = self._state.get("ports", {}).get(str(port))
        if host_port is None:
            host_port = self._expose(port)
        return f"127.0.0.1:{host_port}"

    def _expose(self, port: int) -> int:
        """Ask the supervisor for a new host port (a short local round trip)."""
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(5)
                conn.connect(str(self._layout.ctl_sock))
                conn.sendall(f"expose {port}\n".encode())
                answer = conn.makefile().readline().strip()
        except OSError as error:
            if not self._alive():
                raise SandboxNotFoundError(f"sandbox {self.sandbox_id} is not running") from None
            raise SandboxUnavailableError(f"cannot expose port {port}: {error}") from None
        if not answer.isdigit():
            raise SandboxUnavailableError(f"cannot expose port {port}: {answer}", retryable=False)
        self._state.setdefault("ports", {})[str(port)] = int(answer)
        return int(answer)

    def preview_url(self, port: int = 3000) -> str:
        return f"http://{self.get_host(port)}"

    async def set_timeout(self, timeout: float) -> None:
        if not self._alive():
            raise SandboxNotFoundError(
                f"sandbox {self.sandbox_id} is not running (killed or expired)"
            )
        expires = time.time() + timeout
        try:
            update_state(self._layout.state, lambda s: s.update(expires_at=expires))
        except FileNotFoundError:
            raise SandboxNotFoundError(f"sandbox {self.sandbox_id} was reaped") from None
        self._state["expires_at"] = expires

    async def kill(self) -> bool:
        return await self._kill(self.sandbox_id)

    async def is_running(self) -> bool:
        return self._alive()

    async def snapshot(
        self, index: Mapping[str, str], max_bytes: int = MAX_SNAPSHOT_BYTES
    ) -> WorkspaceSnapshot:
        """Read the overlay's upper layer on the host: exactly what the sandbox changed."""
        if not self._alive():
            raise SandboxNotFoundError(f"sandbox {self.sandbox_id} is not running")
        try:
            return await asyncio.to_thread(read_upper, upper_dir(self._layout), index, max_bytes)
        except FileNotFoundError:
            raise SandboxNotFoundError(f"sandbox {self.sandbox_id} was reaped") from None
