"""Projects and their messages: create, list, read, follow up, cancel, delete, and the live
event stream. Submissions go through `submission.py`, the CLI's own path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

from api.auth import client_key, limit_action
from api.context import ApiContext, context_of
from api.errors import not_found
from api.limits import BodyTooLarge, TooManyStreams
from contract import DeleteProject, project_workflow_id
from repos.history import remove_repository
from repos.importing import ImportRefused
from repos.push import PushFailed, push_project
from runtime import metrics
from runtime.preview_urls import publish_url
from storage import events, images, listing, publications, queries
from storage.errors import ProjectNotFoundError
from storage.image_files import MAX_IMAGE_BYTES, MAX_IMAGES
from storage.views import Prices, message_view, publication_view, usage_view
from submission import (
    ImageUpload,
    InvalidSubmission,
    Submission,
    cancel_running,
    check_prompt,
    check_submission,
    import_project,
    send,
    signal_project,
)

router = APIRouter(prefix="/api", tags=["projects"])

Context = Annotated[ApiContext, Depends(context_of)]
DELETE_WAIT_SECONDS = 60.0


class PromptBody(BaseModel):
    prompt: str


Body = TypeVar("Body", bound=BaseModel)


class CreateBody(BaseModel):
    prompt: str | None = None
    repo_url: str | None = None
    """Start from this git repository instead (its files are the first version)."""
    ref: str | None = None
    token: str | None = Field(default=None, repr=False)
    """For a private repository: used for this fetch only, never stored."""


class Imported(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    """The prompt's message, or without a prompt the imported version's."""
    workflow_id: str
    imported_message_id: uuid.UUID
    commit: str
    files: int


class PushBody(BaseModel):
    remote_url: str
    branch: str = "main"
    token: str | None = Field(default=None, repr=False)
    """Used for this push only: never stored, logged or shown."""
    force: bool = False


def _submission_body(json_schema: type[BaseModel]) -> dict[str, Any]:
    """A route that takes JSON (`json_schema`) or multipart/form-data (a prompt and images)."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_schema.model_json_schema()},
            "multipart/form-data": _MULTIPART,
        },
    }


_MULTIPART = {
    "schema": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "images": {
                "type": "array",
                "maxItems": MAX_IMAGES,
                "items": {"type": "string", "format": "binary"},
                "description": f"PNG, JPEG, WebP or GIF; at most {MAX_IMAGES}, "
                f"{MAX_IMAGE_BYTES // 1024 // 1024} MB and 40 megapixels each",
            },
        },
    }
}


async def read_submission(request: Request) -> tuple[str, list[ImageUpload]]:
    """The prompt and images of a JSON or multipart body; 422 in the API's words otherwise."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return await _read_form(request)
    body = _json_body(PromptBody, await request.body())
    return body.prompt, []


def _json_body(model: type[Body], raw: bytes) -> Body:
    """`raw` as `model`; a 422 in FastAPI's own validation-error form otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            kind = "dict_type" if problem["type"] == "model_type" else problem["type"]
            problems.append({**problem, "type": kind, "loc": ("body", *problem["loc"])})
        raise RequestValidationError(problems) from None


async def _read_form(request: Request) -> tuple[str, list[ImageUpload]]:
    try:
        # More parts than images allowed, so too many images get the image check's words.
        form = await request.form(max_files=4 * MAX_IMAGES, max_fields=16)
    except (HTTPException, BodyTooLarge):
        raise
    except Exception:  # starlette's MultiPartException and malformed bodies
        raise HTTPException(
            422,
            f"the form could not be read; send a `prompt` field and at most {MAX_IMAGES} "
            "`images` files",
        ) from None
    try:
        prompts = form.getlist("prompt")
        if len(prompts) != 1 or not isinstance(prompts[0], str):
            raise HTTPException(422, "prompt is missing; send one `prompt` text field")
        uploads = []
        for part in form.getlist("images"):
            if not isinstance(part, UploadFile):
                raise HTTPException(
                    422, "images must be files (the `images` parts need a filename)"
                )
            data = await part.read(MAX_IMAGE_BYTES + 1)
            uploads.append(ImageUpload(part.filename or "", data, part.content_type))
    finally:
        await form.close()  # the parts spooled to temporary files
    return prompts[0], uploads


class Created(BaseModel):
    project_id: uuid.UUID
    message_id: uuid.UUID
    workflow_id: str


class Accepted(BaseModel):
    message_id: uuid.UUID
    workflow_id: str


def parse_id(value: str, kind: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found(kind, value) from None


def _rate_limit(context: ApiContext, request: Request) -> None:
    wait = context.limiter.retry_after(client_key(request))
    if wait is not None:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(
            429,
            f"too many messages; the limit is {context.settings.qai_rate_limit}. "
            f"Try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def _submit(
    context: ApiContext, request: Request, project_id: uuid.UUID | None
) -> Submission:
    """Check, rate-limit, then send: nothing is written for a refused request."""
    prompt, uploads = await read_submission(request)
    try:
        submission = await check_submission(
            context.db, prompt, project_id=project_id, client=context.temporal, uploads=uploads
        )
    except InvalidSubmission as error:
        raise HTTPException(422, str(error)) from None
    except ProjectNotFoundError:
        raise not_found("project", project_id) from None
    _rate_limit(context, request)
    await send(context.temporal, context.db, context.settings, submission)
    return submission


@router.post(
    "/projects",
    status_code=201,
    response_model=Created | Imported,
    openapi_extra={"requestBody": _submission_body(CreateBody)},
)
async def create_project(request: Request, context: Context) -> Created | Imported:
    """Start a project from a prompt (and up to four images; the run starts at once), or from
    a git repository (`repo_url`, `ref`, `token`: its files become the first version, then the
    prompt runs)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = _json_body(CreateBody, await request.body())
        if body.repo_url is not None:
            return await _import(body, request, context)
        if body.prompt is None:
            raise HTTPException(
                422, 'prompt is missing; send a JSON object such as {"prompt": "..."}'
            )
    submission = await _submit(context, request, None)
    return Created(
        project_id=submission.project_id,
        message_id=submission.message_id,
        workflow_id=submission.workflow_id,
    )


async def _import(body: CreateBody, request: Request, context: Context) -> Imported:
    assert body.repo_url is not None
    if body.prompt is not None:
        try:
            check_prompt(body.prompt)
        except InvalidSubmission as error:
            raise HTTPException(422, str(error)) from None
    _rate_limit(context, request)
    try:
        imported = await import_project(
            context.temporal,
            context.db,
            context.settings,
            body.repo_url,
            ref=body.ref,
            token=body.token,
            prompt=body.prompt,
        )
    except ImportRefused as error:
        raise HTTPException(error.status, str(error)) from None
    return Imported(
        project_id=imported.project_id,
        message_id=imported.submission.message_id
        if imported.submission
        else imported.imported_message_id,
        workflow_id=imported.workflow_id,
        imported_message_id=imported.imported_message_id,
        commit=imported.commit,
        files=imported.fetched.files,
    )


@router.get("/projects")
async def list_projects(
    context: Context,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Projects newest first, a page at a time."""
    try:
        async with context.db.session() as session:
            rows, next_cursor = await listing.page(session, limit=limit, cursor=cursor)
    except listing.BadCursor as error:
        raise HTTPException(422, str(error)) from None
    return {
        "projects": [
            {
                "project_id": str(row.project_id),
                "name": row.name,
                "created_at": row.created_at.isoformat(),
                "updated_at": row.updated_at.isoformat(),
                "preview_url": row.preview_url,
                "last_message": None
                if row.last_message is None
                else {
                    "role": row.last_message.role,
                    "type": row.last_message.type,
                    "content": row.last_message.content,
                    "created_at": row.last_message.created_at.isoformat(),
                },
            }
            for row in rows
        ],
        "next_cursor": next_cursor,
    }


def git_url(request: Request, project_id: uuid.UUID) -> str:
    """The clone URL: this API's own address, as the client reached it."""
    return f"{str(request.base_url).rstrip('/')}/git/{project_id}.git"


@router.get("/projects/{project_id}")
async def get_project(project_id: str, request: Request, context: Context) -> dict[str, Any]:
    """The project with its messages oldest first, the running run's phase, token usage, and
    the URL to `git clone` its versions from."""
    body = await project_body(project_id, context)
    return {**body, "git_url": git_url(request, uuid.UUID(body["project_id"]))}


async def project_body(project_id: str, context: ApiContext) -> dict[str, Any]:
    """What `GET /api/projects/{id}` answers, but the clone URL (which needs the request)."""
    key = parse_id(project_id, "project")
    async with context.db.session() as session:
        project = await queries.get_project(session, key)
        if project is None:
            raise not_found("project", project_id)
        messages = await queries.get_messages(session, key)
        attached = await images.for_messages(session, [m.id for m in messages])
        totals = await listing.usage(session, key)
        last_run = await events.latest_run_event(session, key)
        publication = publication_view(
            await publications.latest(session, key),
            await publications.served(session, key),
            publish_url(context.settings, key),
        )
    answered = {m.reply_to_id for m in messages if m.reply_to_id is not None}
    prices = Prices.of(context.settings)
    running = None
    if last_run is not None and last_run.data.get("phase") != "done":
        run_message = uuid.UUID(last_run.data["message_id"])
        if run_message not in answered:
            running = {
                "message_id": str(run_message),
                "phase": last_run.data["phase"],
                "iteration": last_run.data["iteration"],
                "max_iterations": last_run.data["max_iterations"],
                "tool": last_run.data["tool"],
            }
    return {
        "project_id": str(project.id),
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "updated_at": project.updated_at.isoformat(),
        "messages": [message_view(m, attached.get(m.id, []), prices=prices) for m in messages],
        "running": running,
        "usage": usage_view(*totals, prices),
        "publication": publication,
    }


@router.get("/projects/{project_id}/images/{image_id}", response_class=Response)
async def get_image(project_id: str, image_id: str, context: Context) -> Response:
    """An image attached to one of the project's messages (metadata already stripped)."""
    key = parse_id(project_id, "project")
    async with context.db.session() as session:
        image = await images.project_image(session, key, image_id)
    if image is None:
        raise not_found("image", image_id)
    return Response(
        image.data,
        media_type=image.content_type,
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",  # addressed by content
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


async def _existing(context: ApiContext, project_id: str) -> uuid.UUID:
    key = parse_id(project_id, "project")
    async with context.db.session() as session:
        if await queries.get_project(session, key) is None:
            raise not_found("project", project_id)
    return key


@router.post(
    "/projects/{project_id}/messages",
    status_code=202,
    response_model=Accepted,
    openapi_extra={"requestBody": _submission_body(PromptBody)},
)
async def send_message(project_id: str, request: Request, context: Context) -> Accepted:
    """A follow-up message (with up to four images), answered after the ones before it."""
    key = parse_id(project_id, "project")
    submission = await _submit(context, request, key)
    return Accepted(message_id=submission.message_id, workflow_id=submission.workflow_id)


@router.post("/projects/{project_id}/push", dependencies=[Depends(limit_action)])
async def push(project_id: str, body: PushBody, context: Context) -> dict[str, Any]:
    """Push the project's history (one commit per version) to a remote; answers once done."""
    key = await _existing(context, project_id)
    try:
        pushed = await push_project(
            context.db,
            context.settings,
            key,
            remote_url=body.remote_url,
            branch=body.branch,
            token=body.token,
            force=body.force,
        )
    except PushFailed as error:
        raise HTTPException(error.status, str(error)) from None
    except ProjectNotFoundError:
        raise not_found("project", project_id) from None
    return {
        "remote_url": pushed.remote_url,
        "branch": pushed.branch,
        "commit": pushed.commit,
        "versions": pushed.versions,
        "forced": pushed.forced,
        "detail": (
            f"{pushed.branch} was already at {pushed.commit[:12]}"
            if pushed.up_to_date
            else f"pushed {pushed.versions} version(s) to {pushed.branch} ({pushed.commit[:12]})"
        ),
    }


@router.post("/projects/{project_id}/cancel", status_code=202, dependencies=[Depends(limit_action)])
async def cancel(project_id: str, context: Context) -> dict[str, str]:
    """Cancel the running message: it ends as an ERROR and keeps what it wrote."""
    key = await _existing(context, project_id)
    if not await cancel_running(context.temporal, key):
        return {"detail": "nothing is running in this project"}
    return {"detail": "the running message is being cancelled"}


@router.delete("/projects/{project_id}", status_code=204, dependencies=[Depends(limit_action)])
async def delete_project(project_id: str, context: Context) -> Response:
    """Cancel the project's runs, stop its sandbox and remove it, through its workflow."""
    key = await _existing(context, project_id)
    await signal_project(context.temporal, context.settings, key, "delete", DeleteProject())
    try:
        async with asyncio.timeout(DELETE_WAIT_SECONDS):
            while True:
                async with context.db.session() as session:
                    if await queries.get_project(session, key) is None:
                        await asyncio.to_thread(remove_repository, context.settings, key)
                        return Response(status_code=204)
                await asyncio.sleep(0.2)
    except TimeoutError:
        return JSONResponse(
            {"detail": "the deletion is queued but no worker has done it yet; it will be done"},
            status_code=504,
        )


class _HeldStream(StreamingResponse):
    """A stream that gives its slot back however it ends (even before its first byte)."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def project_known(context: ApiContext, key: uuid.UUID) -> bool:
    """Whether the project exists, or will: its row, or else its workflow (which writes it)."""
    async with context.db.session() as session:
        if await queries.get_project(session, key) is not None:
            return True
    try:
        await context.temporal.get_workflow_handle(project_workflow_id(key)).describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


@router.get(
    "/projects/{project_id}/events",
    response_class=StreamingResponse,
    dependencies=[Depends(limit_action)],
)
async def stream_events(
    project_id: str,
    request: Request,
    context: Context,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """text/event-stream of the project's events; `Last-Event-ID` resumes after that event.

    A project just created may not have its row yet (its workflow writes it): its workflow
    existing is enough, so a client can subscribe right after `POST /api/projects`.
    """
    key = parse_id(project_id, "project")
    if not await project_known(context, key):
        raise not_found("project", project_id)
    after = 0
    if last_event_id:
        if not last_event_id.strip().isdigit():
            raise HTTPException(422, "Last-Event-ID must be the id of an event of this stream")
        after = int(last_event_id.strip())
    client = client_key(request)
    try:
        context.streams.take(client)
    except TooManyStreams as error:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(429, error.detail, headers={"Retry-After": "5"}) from None

    return _HeldStream(
        lambda: context.streams.give_back(client),
        context.hub.stream(key, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
