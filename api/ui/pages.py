"""The UI's routes: the pages (`/`, `/projects/{id}`) and the HTML fragments they refresh
(`/ui/...`). Everything they read comes from the same storage and route code as the JSON API."""

from __future__ import annotations

import html
import uuid
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api import auth
from api.context import ApiContext, context_of
from api.routes.fragments import fragment_or_404
from api.templating import render
from api.ui.state import project_state
from storage import listing

router = APIRouter(include_in_schema=False)

Context = Annotated[ApiContext, Depends(context_of)]

DEFAULT_FILE = "app/page.tsx"
LANGUAGES = {
    ".ts": "typescript",
    ".tsx": "typescript",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".css": "css",
    ".json": "json",
    ".md": "markdown",
    ".html": "xml",
    ".svg": "xml",
    ".sh": "bash",
}


def _token_required(context: ApiContext) -> bool:
    secret = context.settings.qai_api_token
    return secret is not None and bool(secret.get_secret_value())


def _page(request: Request, template: str, **values: Any) -> HTMLResponse:
    """A full page; a cookie session's carries its CSRF token for app.js and htmx to send."""
    status = values.pop("status_code", 200)
    identity = getattr(request.state, "identity", None)
    csrf = auth.csrf_token(identity.session) if identity and identity.session else ""
    page = render(template, logout=_token_required(context_of(request)), csrf=csrf, **values)
    return HTMLResponse(page, status_code=status)


def _status(row: listing.ProjectRow) -> tuple[str, str]:
    """The project's last reply, as (css state, words)."""
    last = row.last_message
    if last is None:
        return "running", "Starting"
    if last.role == "USER":
        return "running", "Working"
    if last.type == "ERROR":
        return "error", "Error"
    return "ready", "Ready"


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, context: Context) -> Response:
    if not auth.authorized(request):
        return RedirectResponse("/login", status_code=303)
    async with context.db.session() as session:
        rows, _ = await listing.page(session, limit=100)
    projects = [
        {
            "id": str(row.project_id),
            "name": row.name,
            "title": row.latest_title,
            "screenshot_url": f"/api/fragments/{row.screenshot_fragment_id}/screenshot"
            if row.screenshot_fragment_id
            else None,
            "last_activity": row.last_message.created_at if row.last_message else row.updated_at,
            "state": _status(row),
        }
        for row in rows
    ]
    return _page(request, "home.html", projects=projects)


def _project_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@router.get("/projects/{project_id}", response_class=HTMLResponse)
async def project_page(project_id: str, request: Request, context: Context) -> Response:
    if not auth.authorized(request):
        return RedirectResponse("/login", status_code=303)
    key = _project_id(project_id)
    state = await project_state(context, key) if key is not None else None
    if state is None:
        return _page(request, "not_found.html", status_code=404)
    git_url = f"{str(request.base_url).rstrip('/')}/git/{key}.git"
    return _page(request, "project.html", state=state, version=state.version(None), git_url=git_url)


@router.get("/ui/projects/{project_id}/conversation", response_class=HTMLResponse)
async def conversation(
    project_id: str, context: Context, version: Annotated[str | None, Query()] = None
) -> HTMLResponse:
    """The live parts of the project page: the conversation and the version bar."""
    key = _project_id(project_id)
    state = await project_state(context, key) if key is not None else None
    if state is None:
        return HTMLResponse("<p>This project no longer exists.</p>", status_code=404)
    return HTMLResponse(render("live.html", state=state, version=state.version(version)))


def _tree(paths: list[str]) -> dict[str, Any]:
    """Paths as nested folders: {name: subtree} for folders, {name: path} for files."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        *folders, name = path.split("/")
        node = root
        for folder in folders:
            node = node.setdefault(folder + "/", {})
        node[name] = path
    return root


def _file_view(fragment_id: str, files: dict[str, str], path: str) -> dict[str, Any]:
    language = LANGUAGES.get(PurePosixPath(path).suffix, "plaintext")
    return {"fragment_id": fragment_id, "path": path, "text": files[path], "language": language}


@router.get("/ui/fragments/{fragment_id}/code", response_class=HTMLResponse)
async def code(fragment_id: str, context: Context) -> HTMLResponse:
    """A version's file tree, with its main page (or first file) open."""
    fragment = await fragment_or_404(context, fragment_id)
    files: dict[str, str] = fragment.files
    chosen = DEFAULT_FILE if DEFAULT_FILE in files else (sorted(files)[0] if files else None)
    page = render(
        "code.html",
        fragment_id=str(fragment.id),
        title=fragment.title,
        tree=_tree(list(files)),
        file=_file_view(str(fragment.id), files, chosen) if chosen else None,
    )
    return HTMLResponse(page)


@router.get("/ui/fragments/{fragment_id}/file", response_class=HTMLResponse)
async def file(fragment_id: str, path: str, context: Context) -> HTMLResponse:
    fragment = await fragment_or_404(context, fragment_id)
    if path not in fragment.files:
        words = f"This version has no file {html.escape(path)}."
        return HTMLResponse(f"<p class='empty'>{words}</p>", status_code=404)
    shown = _file_view(str(fragment.id), fragment.files, path)
    return HTMLResponse(render("file.html", file=shown))
