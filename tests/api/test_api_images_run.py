"""One scripted run with an image, over HTTP on a real sandbox, and a follow-up: the image
reaches the model downscaled and without its GPS data, is written to public/uploads/ before the
agent runs, is in the version's download and served by the preview; the follow-up names it
without sending it again; deleting the project deletes it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
import zipfile

import httpx
import pytest
import sqlalchemy as sa

from runtime.preview_urls import loopback_target
from scripted_llm.protocol import first_user_text
from storage import images
from storage.transcript import TranscriptEntry
from tests.api.test_api_flow import wait_for_reply
from tests.image_samples import gps_of, image_bytes, size_of
from tests.workflows.test_code_agent import summary_turn, terminal_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PAGE = (
    "export default function Page() {\n"
    '  return <main className="p-8"><h1>Mock</h1>\n'
    '    <img src="/uploads/mock.jpg" alt="mock" /></main>;\n'
    "}\n"
)


async def _preview_bytes(url: str) -> httpx.Response:
    target, host = loopback_target(url)
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(120):
            response = await client.get(target, headers={"Host": host} if host else {})
            if response.status_code == 200:
                return response
            await asyncio.sleep(0.5)
    return response


async def test_an_image_from_prompt_to_preview(api_stack) -> None:
    script = {
        "conversations": [
            {
                "name": "follow-up",
                "match": "make the heading blue",
                "turns": [terminal_turn("ls public/uploads"), summary_turn("Made it blue.")],
            }
        ],
        "default": {
            "turns": [
                terminal_turn("ls public/uploads"),
                write_turn("app/page.tsx", PAGE),
                summary_turn("Built the page from the mock."),
            ]
        },
    }
    photo = image_bytes("JPEG", (2000, 1250), gps=True)
    assert gps_of(photo)
    async with api_stack(script) as stack:
        http = stack.http
        created = await http.post(
            "/api/projects",
            data={"prompt": "Build this page"},
            files=[("images", ("mock.jpg", photo, "image/jpeg"))],
        )
        assert created.status_code == 201, created.text
        project_id, message_id = created.json()["project_id"], created.json()["message_id"]
        await wait_for_reply(stack, project_id, message_id)
        await stack.harness.record_histories(uuid.UUID(project_id), uuid.UUID(message_id))
        project = (await http.get(f"/api/projects/{project_id}")).json()
        user, reply = project["messages"]
        assert reply["type"] == "RESULT", reply["content"]
        [listed] = user["images"]
        assert (listed["content_type"], listed["width"], listed["height"]) == (
            "image/jpeg",
            2000,
            1250,
        )
        served = await http.get(listed["url"])
        assert served.status_code == 200 and gps_of(served.content) == {}
        stored = served.content

        # The model got it on every call of the run, downscaled, identical each time.
        turns = [r for r in stack.llm.requests() if r.kind == "turn"]
        assert len(turns) == 3
        assert all(
            [(i["content_type"], i["width"], i["height"]) for i in r.images]
            == [("image/jpeg", 1568, 980)]
            for r in turns
        )
        urls = {
            part["image_url"]["url"]
            for r in turns
            for m in r.messages
            if isinstance(m.get("content"), list)
            for part in m["content"]
            if part.get("type") == "image_url"
        }
        [data_url] = urls
        sent = base64.b64decode(data_url.split(",", 1)[1])
        assert size_of(sent) == (1568, 980) and gps_of(sent) == {}
        assert "public/uploads/mock.jpg" in first_user_text(turns[0].messages)
        assert "/uploads/mock.jpg" in first_user_text(turns[0].messages)
        # The transcript holds a reference, never the bytes.
        async with stack.harness.db.session() as session:
            entries = (
                await session.scalars(
                    sa.select(TranscriptEntry.message).where(
                        TranscriptEntry.run_id == uuid.UUID(message_id)
                    )
                )
            ).all()
        text = json.dumps(list(entries))
        assert "qai-image:" in text and "base64" not in text
        # It was in the workspace before the agent's first command.
        assert "mock.jpg" in json.dumps(
            next(e for e in entries if e.get("role") == "tool")["content"]
        )

        # In the sandbox, in the version's download, and served by the preview.
        sandbox_id = await stack.harness.project_sandbox(uuid.UUID(project_id))
        sandbox = await stack.harness.services.sandboxes.connect(sandbox_id)
        in_sandbox = await sandbox.files.read("/home/user/public/uploads/mock.jpg", format="bytes")
        assert in_sandbox == stored
        fragment_id = reply["fragment"]["fragment_id"]
        archive = await http.get(f"/api/fragments/{fragment_id}/archive")
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
            folder = zipped.namelist()[0].split("/")[0]
            assert zipped.read(f"{folder}/public/uploads/mock.jpg") == stored
        preview = reply["fragment"]["preview_url"].rstrip("/")
        from_preview = await _preview_bytes(f"{preview}/uploads/mock.jpg")
        assert from_preview.status_code == 200 and from_preview.content == stored

        # A follow-up names the image in the history and does not send it again.
        stack.llm.reset()
        sent_follow_up = await http.post(
            f"/api/projects/{project_id}/messages", json={"prompt": "Make the heading blue"}
        )
        await wait_for_reply(stack, project_id, sent_follow_up.json()["message_id"])
        follow_turns = [r for r in stack.llm.requests() if r.kind == "turn"]
        assert follow_turns and all(r.images == [] for r in follow_turns)
        assert "[image: mock.jpg, 2000×1250]" in first_user_text(follow_turns[0].messages)
        project = (await http.get(f"/api/projects/{project_id}")).json()
        assert project["messages"][-1]["type"] == "RESULT", project["messages"][-1]["content"]
        assert project["messages"][2]["images"] == []

        deleted = await http.delete(f"/api/projects/{project_id}")
        assert deleted.status_code == 204
        async with stack.harness.db.session() as session:
            assert await images.count_images(session) == 0
