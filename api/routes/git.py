"""Read-only git over smart HTTP: `git clone http://<api>/git/<project id>.git`.

The repository is the project's history (`repos.history`), brought up to date on each
ref advertisement. `git upload-pack --stateless-rpc` answers, as `git http-backend` would;
pushes are refused in words, since the commits are the server's own.
Authentication is the API's (`api.auth.git_authorized`): git sends the token as a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from api.context import ApiContext, context_of
from repos.gitcmd import GIT, clean_env
from repos.history import sync_repository
from storage.errors import ProjectNotFoundError

PREFIX = "/git/"
"""Requests under it come from git clients: no cookies, no Origin header, Basic auth."""

router = APIRouter(prefix="/git", include_in_schema=False)
Context = Annotated[ApiContext, Depends(context_of)]

READ_ONLY = (
    "this repository is read-only: its commits are the project's versions, made by qai.\n"
    "To publish the project, push it to your own remote: POST /api/projects/{id}/push "
    "or `python starter.py push {id} <remote url>`.\n"
)


def _text(status: int, text: str) -> PlainTextResponse:
    """Errors as text/plain: git shows such a body to its user as `remote: ...` lines."""
    return PlainTextResponse(text, status_code=status, headers={"Cache-Control": "no-cache"})


def _project(name: str) -> uuid.UUID | None:
    if not name.endswith(".git"):
        return None
    try:
        return uuid.UUID(name.removesuffix(".git"))
    except ValueError:
        return None


def _no_project(name: str) -> PlainTextResponse:
    return _text(404, f"there is no project {name.removesuffix('.git')!r}\n")


def _pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


async def _upload_pack(args: list[str], path: str, protocol: str | None, body: bytes | None):
    env = clean_env({"GIT_PROTOCOL": protocol} if protocol else None)
    return await asyncio.create_subprocess_exec(
        GIT,
        "-c",
        "uploadpack.allowFilter=true",
        "upload-pack",
        "--stateless-rpc",
        *args,
        path,
        stdin=asyncio.subprocess.PIPE if body is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


@router.get("/{name}/info/refs")
async def info_refs(name: str, request: Request, context: Context) -> Response:
    service = request.query_params.get("service")
    if service == "git-receive-pack":
        project = _project(name)
        return _text(403, READ_ONLY.replace("{id}", str(project or "<project>")))
    if service != "git-upload-pack":
        return _text(403, "only git's smart HTTP protocol is served here (git 1.6.6 or later)\n")
    key = _project(name)
    if key is None:
        return _no_project(name)
    try:
        repository = await sync_repository(context.db, context.settings, key)
    except ProjectNotFoundError:
        return _no_project(name)
    protocol = request.headers.get("git-protocol")
    process = await _upload_pack(["--advertise-refs"], str(repository.path), protocol, None)
    advertised, _ = await process.communicate()
    if process.returncode != 0:
        return _text(500, "the repository could not be read\n")
    head = b"" if protocol and "version=2" in protocol else _pkt("# service=git-upload-pack\n")
    return Response(
        head + (b"0000" if head else b"") + advertised,
        media_type="application/x-git-upload-pack-advertisement",
        headers={"Cache-Control": "no-cache"},
    )


@router.post("/{name}/git-upload-pack")
async def upload_pack(name: str, request: Request, context: Context) -> Response:
    key = _project(name)
    if key is None:
        return _no_project(name)
    try:  # up to date, and the project still exists
        path = (await sync_repository(context.db, context.settings, key)).path
    except ProjectNotFoundError:
        return _no_project(name)
    body = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return _text(400, "the request body is not valid gzip\n")
    process = await _upload_pack([], str(path), request.headers.get("git-protocol"), body)

    async def output() -> AsyncIterator[bytes]:
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(body)
            await process.stdin.drain()
            process.stdin.close()
            while chunk := await process.stdout.read(65536):
                yield chunk
        except BaseException:  # the client went away: stop serving it
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        finally:
            await process.wait()

    return StreamingResponse(
        output(),
        media_type="application/x-git-upload-pack-result",
        headers={"Cache-Control": "no-cache"},
    )


@router.post("/{name}/git-receive-pack")
async def receive_pack(name: str) -> Response:
    project = _project(name)
    return _text(403, READ_ONLY.replace("{id}", str(project or "<project>")))
