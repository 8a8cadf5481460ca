"""Screenshots of versions over HTTP and in the web UI, against real PostgreSQL (rows written
as the activities write them; no worker): the image or 404, `screenshot_url` on fragments, the
home card's picture and title, the Code tab's thumbnails."""

from __future__ import annotations

import uuid

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from conversation import compute_rolling_conversation_summary
from storage import queries, screenshots
from storage.db import Database
from storage.models import FragmentData, MessageType
from tests.api.test_api_input import _serve

WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 " + b"\x00" * 14  # stored as given; served as image/webp


@pytest.fixture
async def http(workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database):
    async for client in _serve(workflow_env, database_url):
        yield client


async def two_versions(db: Database) -> uuid.UUID:
    """A project with a version that has a screenshot, then a newer one without."""
    async with db.session() as session:
        project, first = await queries.create_project(session, "build-a-todo-app", "Build a todo")
        shot = await screenshots.save(
            session,
            key=str(first.id),
            project_id=project.id,
            data=WEBP,
            media_type="image/webp",
            width=1280,
            height=800,
        )
        await session.commit()
        await queries.save_assistant_reply(
            session,
            summarize=compute_rolling_conversation_summary,
            project_id=project.id,
            user_message_id=first.id,
            type=MessageType.RESULT,
            content="Done.",
            workflow_id="w",
            fragment=FragmentData(
                sandbox_url="",
                title="Task tracker",
                files={"app/page.tsx": "x"},
                screenshot_id=shot,
            ),
        )
        second = await queries.add_user_message(session, project.id, "Add a footer")
        await session.commit()
        await queries.save_assistant_reply(
            session,
            summarize=compute_rolling_conversation_summary,
            project_id=project.id,
            user_message_id=second.id,
            type=MessageType.RESULT,
            content="Footer.",
            workflow_id="w",
            fragment=FragmentData(sandbox_url="", title="Task tracker v2", files={"a.tsx": "y"}),
        )
    return project.id


async def test_versions_have_their_screenshot_in_the_api_and_the_ui(
    http: httpx.AsyncClient, clean_db: Database
) -> None:
    project_id = await two_versions(clean_db)
    body = (await http.get(f"/api/projects/{project_id}")).json()
    fragments = [m["fragment"] for m in body["messages"] if m["fragment"]]
    assert len(fragments) == 2
    with_shot, without = fragments
    assert with_shot["screenshot_url"] == f"/api/fragments/{with_shot['fragment_id']}/screenshot"
    assert without["screenshot_url"] is None

    image = await http.get(with_shot["screenshot_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/webp"
    assert image.content == WEBP
    one = (await http.get(f"/api/fragments/{with_shot['fragment_id']}")).json()
    assert one["screenshot_url"] == with_shot["screenshot_url"]

    missing = await http.get(f"/api/fragments/{without['fragment_id']}/screenshot")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "this version has no screenshot"}
    unknown = await http.get(f"/api/fragments/{uuid.uuid4()}/screenshot")
    assert unknown.status_code == 404

    home = (await http.get("/")).text
    assert f'src="{with_shot["screenshot_url"]}"' in home  # the latest screenshot
    assert "build-a-todo-app" in home
    assert '<span class="project-title">Task tracker v2</span>' in home  # the latest title

    page = (await http.get(f"/projects/{project_id}")).text
    assert page.count('<button type="button" class="version-thumb') == 2
    assert f'<img src="{with_shot["screenshot_url"]}" alt="Screenshot of version 1"' in page
    assert "no picture" in page  # version 2 has none, and nothing breaks
