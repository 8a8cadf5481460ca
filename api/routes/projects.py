"""Projects and their messages: create, list, read, follow up, cancel, delete, and the live
event stream. Submissions go through `submission.py`, the CLI's own path."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

from api.context import ApiContext, context_of
from api.errors import not_found
from contract import DeleteProject, project_workflow_id
from runtime import metrics
from storage import events, listing, queries
from storage.errors import ProjectNotFoundError
from storage.views import message_view
from submission import (
    InvalidSubmission,
    Submission,
    cancel_running,
    check_submission,
    enqueue,
    signal_project,
)

router = APIRouter(prefix="/api", tags=["projects"])

Context = Annotated[ApiContext, Depends(context_of)]
DELETE_WAIT_SECONDS = 60.0


class PromptBody(BaseModel):
    prompt: str


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


async def _submit(
    context: ApiContext, request: Request, prompt: str, project_id: uuid.UUID | None
) -> Submission:
    """Check, rate-limit, then send: nothing is written for a refused request."""
    try:
        submission = await check_submission(
            context.db, prompt, project_id=project_id, client=context.temporal
        )
    except InvalidSubmission as error:
        raise HTTPException(422, str(error)) from None
    except ProjectNotFoundError:
        raise not_found("project", project_id) from None
    client = request.client.host if request.client else "unknown"
    wait = context.limiter.retry_after(client)
    if wait is not None:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(
            429,
            f"too many messages; the limit is {context.settings.qai_rate_limit}. "
            f"Try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    await enqueue(context.temporal, context.settings, submission.project_id, submission.message)
    return submission


@router.post("/projects", status_code=201, response_model=Created)
async def create_project(body: PromptBody, request: Request, context: Context) -> Created:
    """Start a project from a prompt; the run starts at once."""
    submission = await _submit(context, request, body.prompt, None)
    return Created(
        project_id=submission.project_id,
        message_id=submission.message_id,
        workflow_id=submission.workflow_id,
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


@router.get("/projects/{project_id}")
async def get_project(project_id: str, context: Context) -> dict[str, Any]:
    """The project with its messages oldest first, the running run's phase, and token usage."""
    key = parse_id(project_id, "project")
    async with context.db.session() as session:
        project = await queries.get_project(session, key)
        if project is None:
            raise not_found("project", project_id)
        messages = await queries.get_messages(session, key)
        tokens_in, tokens_out = await listing.usage(session, key)
        last_run = await events.latest_run_event(session, key)
    answered = {m.reply_to_id for m in messages if m.reply_to_id is not None}
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
        "messages": [message_view(m) for m in messages],
        "running": running,
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out},
    }


async def _existing(context: ApiContext, project_id: str) -> uuid.UUID:
    key = parse_id(project_id, "project")
    async with context.db.session() as session:
        if await queries.get_project(session, key) is None:
            raise not_found("project", project_id)
    return key


@router.post("/projects/{project_id}/messages", status_code=202, response_model=Accepted)
async def send_message(
    project_id: str, body: PromptBody, request: Request, context: Context
) -> Accepted:
    """A follow-up message, answered after the ones before it."""
    key = parse_id(project_id, "project")
    submission = await _submit(context, request, body.prompt, key)
    return Accepted(message_id=submission.message_id, workflow_id=submission.workflow_id)


@router.post("/projects/{project_id}/cancel", status_code=202)
async def cancel(project_id: str, context: Context) -> dict[str, str]:
    """Cancel the running message: it ends as an ERROR and keeps what it wrote."""
    key = await _existing(context, project_id)
    if not await cancel_running(context.temporal, key):
        return {"detail": "nothing is running in this project"}
    return {"detail": "the running message is being cancelled"}


@router.delete("/projects/{project_id}", status_code=204)
async def delete_project(project_id: str, context: Context) -> Response:
    """Cancel the project's runs, stop its sandbox and remove it, through its workflow."""
    key = await _existing(context, project_id)
    await signal_project(context.temporal, context.settings, key, "delete", DeleteProject())
    try:
        async with asyncio.timeout(DELETE_WAIT_SECONDS):
            while True:
                async with context.db.session() as session:
                    if await queries.get_project(session, key) is None:
                        return Response(status_code=204)
                await asyncio.sleep(0.2)
    except TimeoutError:
        return JSONResponse(
            {"detail": "the deletion is queued but no worker has done it yet; it will be done"},
            status_code=504,
        )


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


@router.get("/projects/{project_id}/events", response_class=StreamingResponse)
async def stream_events(
    project_id: str,
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
    return StreamingResponse(
        context.hub.stream(key, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
