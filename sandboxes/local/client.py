"""The host's side of envd's JSON-lines protocol (one request per unix-socket connection)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandboxes.base import (
    InvalidPathError,
    SandboxError,
    SandboxFileNotFoundError,
    SandboxNotFoundError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WorkspaceError,
)

STREAM_LIMIT = 256 * 1024 * 1024
ERRORS: dict[str, type[SandboxError]] = {
    "invalid_path": InvalidPathError,
    "not_found": SandboxFileNotFoundError,
}
WORKSPACE_KINDS = frozenset(
    {
        "is_a_directory",
        "not_a_directory",
        "no_space",
        "permission_denied",
        "too_large",
        "name_too_long",
        "os_error",
    }
)
"""envd's kinds for file operations the workspace refused: the model can correct those."""


def error_from(reply: dict[str, Any]) -> SandboxError:
    """Our exception for an envd error reply (`error` for requests, `kind` for exec events)."""
    kind = reply.get("error") or reply.get("kind") or "error"
    message = reply.get("message") or kind
    written = tuple(reply.get("written") or ())
    if kind in WORKSPACE_KINDS or written:  # a write that stopped half-way says what it wrote
        return WorkspaceError(message, reason=kind, path=reply.get("path"), written=written)
    cls = ERRORS.get(kind)
    if cls is not None:
        return cls(message)
    if kind == "spawn_failed":  # fork or exec failed inside, e.g. at the process cap
        return SandboxUnavailableError(message, retryable=True)
    return SandboxUnavailableError(message, retryable=False)


class EnvdClient:
    def __init__(self, sandbox_id: str, socket_path: Path, alive: Callable[[], bool]) -> None:
        self.sandbox_id = sandbox_id
        self.socket_path = socket_path
        self.alive = alive

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            mode = os.lstat(self.socket_path).st_mode
            if not stat.S_ISSOCK(mode):  # the sandbox owns the directory: never follow a link
                raise SandboxUnavailableError(
                    f"{self.socket_path} is not a socket", retryable=False
                )
            return await asyncio.open_unix_connection(str(self.socket_path), limit=STREAM_LIMIT)
        except OSError as error:
            if not self.alive():
                raise SandboxNotFoundError(
                    f"sandbox {self.sandbox_id} is not running (killed or expired)"
                ) from None
            raise SandboxUnavailableError(
                f"cannot reach sandbox {self.sandbox_id}: {error}"
            ) from None

    async def request(
        self,
        payload: dict[str, Any],
        timeout: float = 60,
    ) -> dict[str, Any]:
        reader, writer = await self.open()
        try:
            writer.write(json.dumps(payload).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise SandboxTimeoutError(
                f"sandbox {self.sandbox_id} did not answer {payload['op']} within {timeout:g} s"
            ) from None
        except (OSError, asyncio.IncompleteReadError) as error:
            raise SandboxUnavailableError(f"sandbox {self.sandbox_id}: {error}") from None
        finally:
            writer.close()
        if not line:
            if not self.alive():
                raise SandboxNotFoundError(f"sandbox {self.sandbox_id} stopped during the request")
            raise SandboxUnavailableError(f"sandbox {self.sandbox_id} closed the connection")
        reply = json.loads(line)
        if "error" in reply:
            raise error_from(reply)
        return reply
