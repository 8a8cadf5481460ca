"""What the project page shows, read the way `GET /api/projects/{id}` reads it.

The page and its live refreshes render from this one state, so a page that reconnected and
refreshed shows exactly what a fresh load shows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import HTTPException

from api.context import ApiContext
from api.routes.projects import project_body, project_known
from storage import events


@dataclass(frozen=True)
class Running:
    message_id: str
    phase: str
    iteration: int
    max_iterations: int
    tool: str | None
    started_at: datetime | None
    attempt: int
    text: str


@dataclass(frozen=True)
class Version:
    number: int
    """1 for the project's first version, counting up."""
    fragment_id: str
    title: str
    created_at: datetime
    preview_url: str | None
    screenshot_url: str | None = None


@dataclass(frozen=True)
class ProjectState:
    project_id: str
    name: str
    recorded: bool
    """False until the project's workflow has written its row (just after Create)."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    running: Running | None = None
    versions: list[Version] = field(default_factory=list)
    publication: dict[str, Any] | None = None
    """`GET /api/projects/{id}`'s publication (see docs/publishing.md)."""

    def version_number(self, fragment_id: str | None) -> int | None:
        return next((v.number for v in self.versions if v.fragment_id == fragment_id), None)

    @property
    def preview_url(self) -> str | None:
        return next((v.preview_url for v in self.versions if v.preview_url), None)

    def version(self, fragment_id: str | None) -> Version | None:
        """The chosen version if it exists, else the newest."""
        chosen = [v for v in self.versions if v.fragment_id == fragment_id]
        return chosen[0] if chosen else (self.versions[0] if self.versions else None)


def _status(message: dict[str, Any], answered: set[str], running: Running | None) -> str:
    """A user message is answered, running, or queued behind the running one."""
    if message["role"] != "USER" or message["message_id"] in answered:
        return ""
    if running is not None and running.message_id == message["message_id"]:
        return "running"
    return "queued"


async def project_state(context: ApiContext, project_id: uuid.UUID) -> ProjectState | None:
    """The page's state; None when there is no such project (nor a workflow starting one)."""
    try:
        body = await project_body(str(project_id), context)
    except HTTPException as error:
        if error.status_code != 404:
            raise
        if await project_known(context, project_id):
            return ProjectState(str(project_id), "New project", recorded=False)
        return None
    running = None
    if body["running"] is not None:
        run = body["running"]
        run_id = uuid.UUID(run["message_id"])
        async with context.db.session() as session:
            started = await events.run_started_at(session, project_id, run_id)
            attempt, text = await events.streamed_text(
                session, project_id, run_id, run["iteration"]
            )
        running = Running(
            message_id=run["message_id"],
            phase=run["phase"],
            iteration=run["iteration"],
            max_iterations=run["max_iterations"],
            tool=run["tool"],
            started_at=started,
            attempt=attempt,
            text=text,
        )
    messages = body["messages"]
    answered = {m["reply_to_id"] for m in messages if m.get("reply_to_id")}
    async with context.db.session() as session:
        diffs = await events.edit_diffs(session, project_id)
    for message in messages:
        message["status"] = _status(message, answered, running)
        message["edits"] = diffs.get(message.get("reply_to_id") or "", [])
    oldest_first = [m for m in messages if m["fragment"] is not None]
    versions = [
        Version(
            number=number,
            fragment_id=m["fragment"]["fragment_id"],
            title=m["fragment"]["title"],
            created_at=datetime.fromisoformat(m["created_at"]),
            preview_url=m["fragment"]["preview_url"],
            screenshot_url=m["fragment"].get("screenshot_url"),
        )
        for number, m in reversed(list(enumerate(oldest_first, start=1)))
    ]
    for number, m in enumerate(oldest_first, start=1):
        m["version_number"] = number
    return ProjectState(
        project_id=body["project_id"],
        name=body["name"],
        recorded=True,
        messages=messages,
        running=running,
        versions=versions,
        publication=body.get("publication"),
    )
