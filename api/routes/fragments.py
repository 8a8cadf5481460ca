"""Fragments (the versions of a project): read one, download it as a zip, or make it current."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from api.archive import app_zip
from api.context import ApiContext, context_of
from api.errors import not_found
from api.routes.projects import parse_id
from contract import RestoreVersion, project_workflow_id
from storage import versions
from storage.models import Fragment
from submission import signal_project

router = APIRouter(prefix="/api/fragments", tags=["fragments"])

Context = Annotated[ApiContext, Depends(context_of)]


async def fragment_or_404(context: ApiContext, fragment_id: str) -> Fragment:
    key = parse_id(fragment_id, "fragment")
    async with context.db.session() as session:
        fragment = await versions.get_fragment(session, key)
    if fragment is None:
        raise not_found("fragment", fragment_id)
    return fragment


@router.get("/{fragment_id}")
async def get_fragment(fragment_id: str, context: Context) -> dict[str, Any]:
    """The version with its files' contents."""
    fragment = await fragment_or_404(context, fragment_id)
    return {
        "fragment_id": str(fragment.id),
        "message_id": str(fragment.message_id),
        "title": fragment.title,
        "summary": fragment.summary,
        "preview_url": fragment.sandbox_url or None,
        "files": fragment.files,
        "checks": fragment.checks,
    }


@router.get("/{fragment_id}/archive", response_class=Response)
async def archive(fragment_id: str, context: Context) -> Response:
    """application/zip: the template's app plus this version's files."""
    fragment = await fragment_or_404(context, fragment_id)
    async with context.db.session() as session:
        workspace = await versions.fragment_workspace(session, fragment)
    folder = f"qai-{str(fragment.id)[:8]}"
    return Response(
        app_zip(workspace, folder),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{folder}.zip"'},
    )


@router.post("/{fragment_id}/restore", status_code=202)
async def restore(fragment_id: str, context: Context) -> dict[str, str]:
    """Make this version current, after whatever the project is doing now."""
    fragment = await fragment_or_404(context, fragment_id)
    async with context.db.session() as session:
        project_id = await versions.fragment_project(session, fragment)
    message_id = uuid.uuid4()
    await signal_project(
        context.temporal,
        context.settings,
        project_id,
        "restore",
        RestoreVersion(message_id=message_id, fragment_id=fragment.id),
    )
    return {"message_id": str(message_id), "workflow_id": project_workflow_id(project_id)}
