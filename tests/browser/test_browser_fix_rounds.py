"""Drafts checked in a real browser, on real sandboxes: one scripted project whose first draft
has four faults that only a browser sees, and a follow-up edit watched live through the stable
preview URL.

Run 1: a hydration mismatch, a throw in useEffect, an infinite update loop and a fetch to a
missing route all answer 200 to the routes check; the browser check reports each, with its
route and source line, and the model fixes them in one fix round. Run 2, while Chromium has the
stable URL open: the edit appears without the page reloading (hot reload through the gateway),
and the good page passes with no extra model call. Each version has its screenshot.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from playwright.async_api import async_playwright

from runtime.processes import free_port
from storage import screenshots
from tests.browser.test_browser_check import pytestmark as needs_chromium
from tests.workflows.conftest import preview_text
from tests.workflows.test_checks import feedback_messages
from tests.workflows.test_code_agent import USAGE, replies, summary_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow, needs_chromium]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def files_turn(files: dict[str, str]) -> dict:
    calls = [{"path": path, "content": content} for path, content in files.items()]
    return {
        "tool_calls": [{"name": "createOrUpdateFiles", "arguments": {"files": calls}}],
        "usage": USAGE,
    }


def home(marker: str) -> str:
    return f'export default function Page() {{\n  return <h1 id="title">{marker}</h1>;\n}}\n'


CLIENT = '"use client";\nimport { useEffect, useState } from "react";\n\n'
FAULTY = {
    "app/hydrate/page.tsx": CLIENT
    + "export default function Page() {\n"
    + '  return <p>{typeof window === "undefined" ? "server" : "client"}</p>;\n'
    + "}\n",
    "app/effect/page.tsx": CLIENT
    + "export default function Page() {\n"
    + "  useEffect(() => {\n"
    + '    throw new Error("effect exploded");\n'
    + "  }, []);\n"
    + "  return <p>effect</p>;\n"
    + "}\n",
    "app/loop/page.tsx": CLIENT
    + "export default function Page() {\n"
    + "  const [count, setCount] = useState(0);\n"
    + "  useEffect(() => {\n"
    + "    setCount(count + 1);\n"
    + "  });\n"
    + "  return <p>{count}</p>;\n"
    + "}\n",
    "app/fetch/page.tsx": CLIENT
    + "export default function Page() {\n"
    + '  const [items, setItems] = useState("loading");\n'
    + "  useEffect(() => {\n"
    + '    fetch("/api/items").then((r) => r.json()).then((j) => setItems(String(j)));\n'
    + "  }, []);\n"
    + "  return <p>{items}</p>;\n"
    + "}\n",
}
FIXED = {
    "app/hydrate/page.tsx": CLIENT
    + "export default function Page() {\n"
    + '  const [side, setSide] = useState("server");\n'
    + '  useEffect(() => setSide("client"), []);\n'
    + "  return <p>{side}</p>;\n"
    + "}\n",
    "app/effect/page.tsx": "export default function Page() {\n  return <p>effect</p>;\n}\n",
    "app/loop/page.tsx": CLIENT
    + "export default function Page() {\n"
    + "  const [count, setCount] = useState(0);\n"
    + "  useEffect(() => setCount(1), []);\n"
    + "  return <p>{count}</p>;\n"
    + "}\n",
    "app/fetch/page.tsx": "export default function Page() {\n  return <p>no fetch</p>;\n}\n",
}


async def test_browser_errors_are_fixed_and_an_edit_hot_reloads_through_the_stable_url(
    agent_harness,
) -> None:
    first_marker, second_marker = (f"Home {uuid.uuid4().hex[:6]}" for _ in range(2))
    script = {
        "conversations": [
            {
                "match": "heading",
                "title": "Renamed Home",
                "turns": [
                    write_turn("app/page.tsx", home(second_marker)),
                    summary_turn("Renamed the heading."),
                ],
            }
        ],
        "default": {
            "title": "Faulty App",
            "turns": [
                files_turn({"app/page.tsx": home(first_marker), **FAULTY}),
                summary_turn("Four pages."),
                files_turn(FIXED),
                summary_turn("Four pages, fixed."),
            ],
        },
    }
    # A public-style QAI_PREVIEW_URL whose domain the template does not list (`*.localhost`
    # matches one label): hot reload works because the gateway presents an accepted origin.
    port = free_port()
    public = {
        "qai_preview_port": port,
        "qai_preview_url": f"http://{{project_id}}.apps.localhost:{port}",
    }
    async with agent_harness(script, **public) as (harness, llm):
        project_id, message_id = await harness.new_project("Build four pages")
        outcome = await harness.submit(project_id, message_id)
        assert outcome.status.value == "RESULT", outcome.content
        assert outcome.content == "Four pages, fixed."
        assert len(llm.completed_counts()) == 5  # four turns and the title

        [sent] = await feedback_messages(harness, message_id)
        assert "[browser] /hydrate: uncaught: Hydration failed" in sent
        assert "[browser] app/effect/page.tsx:6: /effect: uncaught: effect exploded" in sent
        assert "[browser] app/loop/page.tsx:7: /loop: console.error: Maximum update depth" in sent
        assert "[browser] /fetch: request: GET /api/items answered 404" in sent
        assert sent.count("Maximum update depth") == 1  # deduplicated

        [reply] = await replies(harness, project_id)
        checks = reply.fragment.checks
        assert checks["status"] == "passed" and checks["rounds"] == 1, checks
        assert checks["ran"] == ["types", "routes", "server_log", "browser"]
        first_shot = reply.fragment.screenshot_id
        assert first_shot is not None
        async with harness.db.session() as session:
            image = await screenshots.get(session, first_shot)
        assert image is not None and image.media_type == "image/webp"
        assert image.data[:4] == b"RIFF" and image.data[8:12] == b"WEBP"
        assert 1_000 < len(image.data) <= 300 * 1024
        assert (image.width, image.height) == (1280, 800)
        print(f"screenshot: {len(image.data)} bytes")

        url = outcome.sandbox_url
        assert url == f"http://{project_id}.apps.localhost:{port}/"
        await preview_text(url, first_marker)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for_selector(f"text={first_marker}")
                await page.evaluate("window.__sameDocument = true")
                second = await harness.add_message(project_id, "Change the heading")
                two = await harness.submit(project_id, second)
                assert two.status.value == "RESULT", two.content
                await page.wait_for_selector(f"text={second_marker}", timeout=60_000)
                # Hot reload, not a reload: the document (and its variables) stayed.
                assert await page.evaluate("window.__sameDocument === true")
            finally:
                await browser.close()

        assert await feedback_messages(harness, second) == []
        assert len(llm.completed_counts()) == 8  # two turns and the title: no fix round
        latest = (await replies(harness, project_id))[-1]
        assert latest.fragment.checks["rounds"] == 0
        assert latest.fragment.checks["status"] == "passed"
        assert latest.fragment.screenshot_id not in (None, first_shot)
        await asyncio.sleep(0)
