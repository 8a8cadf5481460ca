"""Publishing a real project over HTTP: a real `next build` in a build sandbox, the static
export stored as blobs and served by the gateway at the project's stable app URL.

One project, three builds: its first version is published and visited (no hot-reload client,
immutable assets, the preview untouched, the build sandbox gone); a follow-up's version is
published at the same URL; a version whose build fails leaves the earlier one served, with
the build's error in words; unpublishing answers 404. The republish is the web UI's Publish
button, and the UI shows the published URL, its version and the failed build's error.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from runtime.preview_urls import loopback_target
from tests.api.conftest import Stack, read_events, run_done
from tests.workflows.test_code_agent import page, summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

BROKEN = (
    'import { nothing } from "a-package-that-is-not-there";\n\n'
    "export default function Page() {\n  return <main>{nothing}</main>;\n}\n"
)


async def send(stack: Stack, project_id: str, prompt: str) -> None:
    sent = await stack.http.post(f"/api/projects/{project_id}/messages", json={"prompt": prompt})
    assert sent.status_code == 202, sent.text
    async with asyncio.timeout(300):
        await read_events(stack.http, project_id, run_done(sent.json()["message_id"]))


async def publish(stack: Stack, project_id: str, **body: Any) -> dict[str, Any]:
    """POST publish, then the project's publication once that build is done."""
    accepted = await stack.http.post(f"/api/projects/{project_id}/publish", json=body)
    assert accepted.status_code == 202, accepted.text
    fragment_id = accepted.json()["fragment_id"]
    async with asyncio.timeout(900):
        while True:
            project = (await stack.http.get(f"/api/projects/{project_id}")).json()
            publication = project["publication"]
            if (
                publication is not None
                and publication["fragment_id"] == fragment_id
                and publication["status"] != "building"
            ):
                return publication
            await asyncio.sleep(1)


async def visit(url: str, path: str = "/") -> httpx.Response:
    target, host = loopback_target(url)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(target.rstrip("/") + path, headers={"Host": host or ""})


async def served_text(url: str, expected: str) -> str:
    async with asyncio.timeout(30):
        while True:
            response = await visit(url)
            if response.status_code == 200 and expected in response.text:
                return response.text
            await asyncio.sleep(0.5)


async def test_publish_republish_failed_build_and_unpublish(api_stack, new_page) -> None:
    first, second = f"Published {uuid.uuid4().hex[:6]}", f"Republished {uuid.uuid4().hex[:6]}"
    # The first conversation whose `match` is in the request's first user message is replayed,
    # and the last request's context still holds "zebra": so "yak" comes first.
    script = {
        "conversations": [
            {
                "name": "break",
                "match": "yak",
                "turns": [write_turn("app/page.tsx", BROKEN), summary_turn("Broke it.")],
            },
            {
                "name": "change",
                "match": "zebra",
                "turns": [write_turn("app/page.tsx", page(second)), summary_turn("Changed it.")],
            },
        ],
        "default": {
            "title": "Hello Page",
            "turns": [write_turn("app/page.tsx", page(first)), summary_turn("A hello page.")],
        },
    }
    async with api_stack(script, qai_fix_attempts=0) as stack:
        http = stack.http
        created = await http.post("/api/projects", json={"prompt": "Build a hello page"})
        project_id, message_id = created.json()["project_id"], created.json()["message_id"]
        async with asyncio.timeout(300):
            await read_events(http, project_id, run_done(message_id))
        project = (await http.get(f"/api/projects/{project_id}")).json()
        assert project["publication"] is None
        first_fragment = project["messages"][1]["fragment"]["fragment_id"]
        preview_sandbox = await stack.harness.project_sandbox(uuid.UUID(project_id))

        # Bad input is refused over HTTP too, and nothing is written.
        unknown = await http.post(
            f"/api/projects/{project_id}/publish", json={"fragment_id": str(uuid.uuid4())}
        )
        assert unknown.status_code == 404 and "no version" in unknown.json()["detail"]
        bad = await http.post(f"/api/projects/{project_id}/publish", json={"fragment_id": "x"})
        assert bad.status_code == 422
        missing = await http.post(f"/api/projects/{uuid.uuid4()}/publish", json={})
        assert missing.status_code == 404
        assert (await http.get(f"/api/projects/{project_id}")).json()["publication"] is None

        # Publish the first version (the default: the latest RESULT) and visit it.
        live = await publish(stack, project_id)
        assert live["status"] == "live", live
        assert live["mode"] == "static" and live["error"] is None
        assert live["fragment_id"] == first_fragment and live["published_at"]
        port = stack.harness.settings.qai_preview_port
        url = live["url"]
        assert url == f"http://{project_id}.app.localhost:{port}/"
        html = await served_text(url, first)
        for dev_only in (
            "webpack-hmr",
            "react-refresh",
            "hot-update",
            "__nextDevClient",
            "turbopack",
        ):
            assert dev_only not in html
        asset = next(
            part.split('"')[0] for part in html.split('src="')[1:] if "/_next/static/" in part
        )
        fetched = await visit(url, asset)
        assert fetched.status_code == 200
        assert fetched.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert (await visit(url, asset + ".map")).status_code == 404  # no source maps
        # The build had its own sandbox, now gone; the preview's sandbox was left alone.
        backend = stack.harness.services.sandboxes
        assert await backend.find({"project_id": project_id}) == [preview_sandbox]
        assert await (await backend.connect(preview_sandbox)).is_running()

        # A follow-up's version, published from the web UI's Publish button at the same URL.
        await send(stack, project_id, "zebra")
        ui = await new_page(stack.url)
        await ui.goto(f"/projects/{project_id}")
        publication = ui.locator("#publication")
        await expect(ui.locator("#published-url")).to_have_attribute("href", url)
        await expect(publication).to_contain_text("Version 1")
        await ui.locator("#publish").click()
        await expect(publication).to_contain_text("Version 2", timeout=900_000)
        republished = (await http.get(f"/api/projects/{project_id}")).json()["publication"]
        assert republished["status"] == "live" and republished["url"] == url
        assert republished["fragment_id"] != first_fragment
        await served_text(url, second)

        # A version whose build fails: the error in words, the earlier build still served.
        await send(stack, project_id, "yak")
        failed = await publish(stack, project_id)
        assert failed["status"] == "failed", failed
        assert "a-package-that-is-not-there" in failed["error"]
        assert "/home/user" not in failed["error"] and "/work/" not in failed["error"]
        assert failed["live_fragment_id"] == republished["fragment_id"]
        await served_text(url, second)
        await ui.reload()  # the UI shows the failure, and the version still served
        await expect(ui.locator("#publish-error")).to_contain_text("a-package-that-is-not-there")
        await expect(ui.locator("#publish-error")).to_contain_text("version 3 failed")
        await expect(publication).to_contain_text("Version 2")

        # Unpublish: 204, then 404 at the URL and no publication.
        gone = await http.delete(f"/api/projects/{project_id}/publish")
        assert gone.status_code == 204
        async with asyncio.timeout(60):
            while (await visit(url)).status_code != 404:
                await asyncio.sleep(0.5)
        assert (await http.get(f"/api/projects/{project_id}")).json()["publication"] is None
        blobs = stack.harness.services.blobs
        assert blobs is not None and await blobs.list(f"publications/{project_id}/") == []
