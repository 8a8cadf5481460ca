"""The whole product in a real Chromium: create a project from the home page, watch it run, see
the app in the preview, read its code, follow up, switch versions, restore one and download it."""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, expect

from tests.workflows.test_code_agent import page as page_source
from tests.workflows.test_code_agent import summary_turn, terminal_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PREVIEW_SECONDS = 180


def flow_script(first: str, second: str) -> dict:
    return {
        "conversations": [
            {
                "name": "change",
                "match": "zebra",
                "turns": [
                    write_turn("app/page.tsx", page_source(second)),
                    summary_turn("Changed the heading."),
                ],
            }
        ],
        "default": {
            "title": "Hello Page",
            "turns": [
                {
                    **write_turn("app/page.tsx", page_source(first)),
                    "content": "Writing the page now.",
                    "delay": 1.0,
                },
                terminal_turn("grep -c First app/page.tsx"),
                summary_turn("A hello page."),
            ],
        },
    }


async def code_shows(page: Page, text: str) -> None:
    await expect(page.locator("#file-text")).to_contain_text(text, timeout=30_000)


async def preview_shows(page: Page, text: str) -> None:
    """Switch to Preview, see `text` in the app, and go back to Code."""
    await page.get_by_role("tab", name="Preview").click()
    heading = page.frame_locator("#preview").get_by_role("heading", name=text)
    await expect(heading).to_be_visible(timeout=PREVIEW_SECONDS * 1000)
    await page.get_by_role("tab", name="Code").click()


async def test_create_watch_preview_code_follow_up_versions_restore_download(
    api_stack, new_page
) -> None:
    first, second = f"First {uuid.uuid4().hex[:6]}", f"Second {uuid.uuid4().hex[:6]}"
    async with api_stack(flow_script(first, second)) as stack:
        page = await new_page(stack.url)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))

        # 1. Create a project from the home page.
        await page.goto("/")
        await expect(page.get_by_text("No projects yet")).to_be_visible()
        await page.get_by_label("Describe your app").fill("Build a hello page")
        await page.get_by_role("button", name="Create").click()
        await page.wait_for_url(re.compile(r"/projects/[0-9a-f-]{36}$"))
        project_id = page.url.rsplit("/", 1)[1]

        # 2. Progress: the phase, "iteration n of max" and the elapsed time, live.
        running = page.locator("#running")
        await expect(running).to_be_visible(timeout=60_000)
        await expect(running.locator(".phase")).not_to_be_empty()
        await expect(running).to_contain_text(re.compile(r"iteration \d of 8"), timeout=60_000)
        await expect(running.locator(".elapsed")).to_have_text(re.compile(r"^\d+:\d\d$"))
        await expect(page.locator(".msg-user")).to_contain_text("Build a hello page")

        # 3. The preview shows the generated app.
        reply = page.locator(".msg-agent[data-message]", has_text="A hello page.")
        await expect(reply).to_be_visible(timeout=PREVIEW_SECONDS * 1000)
        await expect(running).to_have_count(0, timeout=60_000)
        preview = page.frame_locator("#preview")
        await expect(preview.get_by_role("heading", name=first)).to_be_visible(
            timeout=PREVIEW_SECONDS * 1000
        )
        url = await page.locator("#preview").get_attribute("src")
        assert url and url.startswith("http")
        await expect(page.locator("#preview-url")).to_have_text(url)
        await expect(page.get_by_role("link", name="Open in new tab")).to_have_attribute(
            "href", url
        )
        await page.get_by_role("button", name="Reload").click()
        await expect(preview.get_by_role("heading", name=first)).to_be_visible(timeout=60_000)

        # Side by side at 1280x800.
        chat = await page.locator(".chat").bounding_box()
        side = await page.locator(".side").bounding_box()
        assert chat and side and side["x"] >= chat["x"] + chat["width"] - 1
        assert abs(side["y"] - chat["y"]) < 1

        # 4. Code: the version's tree; app/page.tsx highlighted, with Copy.
        await page.get_by_role("tab", name="Code").click()
        await expect(page.get_by_role("tab", name="Code")).to_have_attribute(
            "aria-selected", "true"
        )
        await expect(page.locator("#panel-preview")).to_be_hidden()
        await page.get_by_role("button", name="app/page.tsx").click()
        await code_shows(page, first)
        await expect(page.locator("#file-text")).to_have_class(re.compile(r"\bhljs\b"))
        await expect(page.locator("#file-text .hljs-keyword").first).to_be_visible()
        await expect(page.get_by_role("button", name="Copy")).to_be_visible()

        # 5. A follow-up, sent with Enter; Shift+Enter made a new line first.
        message = page.get_by_label("Message")
        await message.fill("zebra stripes")
        await message.press("Shift+Enter")
        await message.type("please")
        assert await message.input_value() == "zebra stripes\nplease"
        await message.press("Enter")
        await expect(message).to_have_value("", timeout=30_000)
        await expect(page.locator(".msg-user").nth(1)).to_contain_text("zebra stripes")
        await expect(
            page.locator(".msg-agent[data-message]", has_text="Changed the heading.")
        ).to_be_visible(timeout=PREVIEW_SECONDS * 1000)
        options = page.locator("#version-select option")
        await expect(options).to_have_count(2)
        await expect(options.first).to_contain_text("Version 2")
        await code_shows(page, second)  # Code follows the newest version
        await preview_shows(page, second)
        # Each version's thumbnail is its screenshot (taken by the browser check of `/`).
        await expect(page.locator(".version-thumb img")).to_have_count(2)

        # 6. Switch to the first version.
        await page.get_by_label("Version").select_option(label=await options.nth(1).inner_text())
        await expect(options.nth(1)).to_contain_text("Version 1")
        await code_shows(page, first)

        # 7. Restore it: a new newest version with the first one's files.
        await page.get_by_role("button", name="Restore this version").click()
        await expect(
            page.locator(".msg-agent[data-message]", has_text="Restored version")
        ).to_be_visible(timeout=120_000)
        await expect(options).to_have_count(3)
        await expect(options.first).to_contain_text("Version 3")
        await expect(page.get_by_label("Version")).to_have_value(
            await options.first.get_attribute("value") or ""
        )
        await code_shows(page, first)
        await preview_shows(page, first)
        await expect(page.locator(".version-thumb img")).to_have_count(3, timeout=60_000)

        # 8. Download the selected (restored) version.
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Download").click()
        download = await download_info.value
        path = await download.path()
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zipped:
            [page_file] = [n for n in zipped.namelist() if n.endswith("/app/page.tsx")]
            assert first in zipped.read(page_file).decode()
            assert any(n.endswith("/package.json") for n in zipped.namelist())

        # Nothing came from outside this machine (no CDN, no remote fonts).
        hosts = {urlsplit(url).hostname for url in requested if not url.startswith("data:")}
        assert hosts and all(
            host == "127.0.0.1" or host == "localhost" or str(host).endswith(".localhost")
            for host in hosts
        ), hosts

        # The home page lists the project with its last reply's status.
        await page.goto("/")
        row = page.get_by_role("link", name=re.compile("Ready"))
        await expect(row).to_have_attribute("href", f"/projects/{project_id}")
