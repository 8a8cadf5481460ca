"""Publishing a project: a production build of one of its versions at its own stable URL.

Both routes go through `submission.py`, as the CLI does: the publish is checked (nothing is
written for bad input), then queued in the project's workflow, which builds it in turn.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel

from api.context import ApiContext, context_of
from api.errors import not_found
from api.routes.projects import parse_id
from runtime.preview_urls import publish_url
from storage.errors import ProjectNotFoundError
from submission import PublishRefused, publish, unpublish

router = APIRouter(prefix="/api/projects", tags=["publishing"])

Context = Annotated[ApiContext, Depends(context_of)]


class PublishBody(BaseModel):
    fragment_id: uuid.UUID | None = None
    """The version to publish; the latest RESULT's when unset."""


class PublishAccepted(BaseModel):
    publication_id: uuid.UUID
    fragment_id: uuid.UUID
    url: str


@router.post("/{project_id}/publish", status_code=202, response_model=PublishAccepted)
async def publish_project(
    project_id: str, context: Context, body: PublishBody | None = None
) -> PublishAccepted:
    """Build the version for production and serve it at the project's app URL."""
    key = parse_id(project_id, "project")
    try:
        request = await publish(
            context.temporal,
            context.db,
            context.settings,
            key,
            body.fragment_id if body else None,
        )
    except ProjectNotFoundError:
        raise not_found("project", project_id) from None
    except PublishRefused as error:
        raise HTTPException(error.status, str(error)) from None
    return PublishAccepted(
        publication_id=request.publication_id,
        fragment_id=request.fragment_id,
        url=publish_url(context.settings, key),
    )


@router.delete("/{project_id}/publish", status_code=204)
async def unpublish_project(project_id: str, context: Context) -> Response:
    """Take the app down: its URL answers 404 once the project's workflow has done it."""
    key = parse_id(project_id, "project")
    try:
        await unpublish(context.temporal, context.db, context.settings, key)
    except ProjectNotFoundError:
        raise not_found("project", project_id) from None
    return Response(status_code=204)
