"""The UI's other states in a real Chromium: an error reply, refused submissions (nothing lost
from the textbox), a dropped event stream that resumes, and the narrow layout."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from playwright.async_api import Page, Request, expect

from tests.ui.network import CuttableLine
from tests.workflows.test_code_agent import page as page_source
from tests.workflows.test_code_agent import summary_turn, terminal_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

REFUSED = "The scripted model refused this request."
FAILING = {
    "default": {
        "title": "Broken",
        "turns": [{"content": "x", "faults": [{"status": 400, "message": REFUSED}] * 5}],
    }
}


async def create(stack, prompt: str) -> str:
    created = await stack.http.post("/api/projects", json={"prompt": prompt})
    assert created.status_code == 201, created.text
    return created.json()["project_id"]


async def test_an_error_reply_and_refused_prompts_keep_the_text(api_stack, new_page) -> None:
    async with api_stack(FAILING, qai_rate_limit="1/hour") as stack:
        page = await new_page(stack.url)
        await page.goto("/")
        prompt = page.get_by_label("Describe your app")
        create_button = page.get_by_role("button", name="Create")

        await create_button.click()
        await expect(page.locator("#create-error")).to_have_text(
            "the prompt is empty; describe the app you want"
        )
        too_long = "a" * 10_001
        await prompt.fill(too_long)
        await create_button.click()
        await expect(page.locator("#create-error")).to_contain_text("the limit is 10,000")
        assert await prompt.input_value() == too_long
        assert page.url.endswith("/")

        await prompt.fill("Please build something")
        await create_button.click()
        await page.wait_for_url(re.compile(r"/projects/"))
        error = page.locator(".msg-error")
        await expect(error).to_be_visible(timeout=120_000)
        await expect(error.locator(".badge-error")).to_have_text("Error")
        await expect(error.locator(".msg-body")).not_to_be_empty()
        await expect(page.locator("#running")).to_have_count(0)

        # The rate limit (1/hour, spent on Create) refuses the follow-up; its text stays.
        message = page.get_by_label("Message")
        await message.fill("one more try")
        await message.press("Enter")
        await expect(page.locator("#message-error")).to_contain_text("too many messages")
        await expect(message).to_have_value("one more try")
        await message.fill("")
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator("#message-error")).to_have_text(
            "the prompt is empty; describe the app you want"
        )

        await page.goto("/")
        await expect(page.locator(".project-row .badge-error")).to_have_text("Error")


def slow_script(marker: str) -> dict:
    return {
        "conversations": [
            {"match": "quick", "turns": [summary_turn("A quick answer.")]},
        ],
        "default": {
            "title": "Slow Page",
            "turns": [
                {**write_turn("app/page.tsx", page_source(marker)), "delay": 2.0},
                {
                    **terminal_turn("sleep 2; ls app"),
                    "content": "Looking at the files.",
                    "delay": 2.0,
                },
                {**summary_turn("A slow page."), "delay": 1.0},
            ],
        },
    }


async def conversation_text(page: Page) -> tuple[str, str]:
    return (
        await page.locator("#conversation").inner_text(),
        await page.locator("#version-bar").inner_text(),
    )


async def test_a_dropped_stream_shows_a_banner_and_resumes(api_stack, new_page) -> None:
    async with api_stack(slow_script(f"Slow {uuid.uuid4().hex[:6]}")) as stack:
        line = CuttableLine(stack.url)
        async with line.running() as proxied:
            await _drop_and_resume(stack, line, proxied, new_page)


async def _drop_and_resume(stack, line: CuttableLine, proxied: str, new_page) -> None:
    """Open the page through the line, cut it mid-run, mend it, and compare with a fresh load."""
    project_id = await create(stack, "Build a slow page")
    page = await new_page(proxied)
    streams: list[Request] = []

    def on_request(request: Request) -> None:
        if request.url.endswith(f"/api/projects/{project_id}/events"):
            streams.append(request)

    page.on("request", on_request)
    await page.goto(f"/projects/{project_id}")
    banner = page.get_by_text("Connection lost")
    await expect(page.locator("#running")).to_be_visible(timeout=60_000)
    # The elapsed time counts from the run's start, also across re-renders.
    await expect(page.locator("#running .elapsed")).to_have_text(
        re.compile(r"^0:0[2-9]$"), timeout=15_000
    )
    await expect(page.locator("#workspace")).to_have_attribute("data-connected", "true")
    await expect(banner).to_be_hidden()
    # The model's text streams in while it runs, and a message sent meanwhile waits its turn.
    await expect(page.locator("#running .stream")).to_have_text(
        "Looking at the files.", timeout=30_000
    )
    sent = await stack.http.post(
        f"/api/projects/{project_id}/messages", json={"prompt": "quick question"}
    )
    assert sent.status_code == 202, sent.text
    queued = page.locator(".msg-user", has_text="quick question")
    await expect(queued.locator(".badge-queued")).to_have_text("Queued")

    line.cut()
    await expect(banner).to_be_visible(timeout=30_000)
    await asyncio.sleep(3)  # the run goes on meanwhile
    line.mend()
    await expect(banner).to_be_hidden(timeout=30_000)
    # The browser's own EventSource reconnected (no new one), sending the last id it saw.
    await expect(page.locator("#workspace")).to_have_attribute("data-streams", "1")
    resumed_from = [(await r.all_headers()).get("last-event-id", "") for r in streams]
    assert resumed_from[0] == "" and len(resumed_from) > 1
    assert resumed_from[-1].isdigit() and int(resumed_from[-1]) > 0, resumed_from

    await expect(page.locator(".msg-agent[data-message]", has_text="A slow page.")).to_be_visible(
        timeout=120_000
    )
    await expect(
        page.locator(".msg-agent[data-message]", has_text="A quick answer.")
    ).to_be_visible(timeout=120_000)
    await expect(queued.locator(".badge-queued")).to_have_count(0)
    fresh = await new_page(stack.url)
    await fresh.goto(f"/projects/{project_id}")
    assert await conversation_text(page) == await conversation_text(fresh)


async def test_the_token_is_asked_once_and_the_narrow_layout_stacks(api_stack, new_page) -> None:
    async with api_stack(FAILING, qai_api_token="s3cret") as stack:
        page = await new_page(stack.url, width=400, height=800)
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))

        await page.goto("/")
        await expect(page).to_have_url(re.compile(r"/login$"))
        await page.get_by_label("API token").fill("wrong")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("alert")).to_have_text("That token is not right.")
        await page.get_by_label("API token").fill("s3cret")
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(re.compile(r"/$"))
        await page.get_by_label("Describe your app").fill("Build something narrow")
        await page.get_by_role("button", name="Create").click()
        await page.wait_for_url(re.compile(r"/projects/"))
        await expect(page.locator(".msg-error")).to_be_visible(timeout=120_000)
        assert not any("s3cret" in url for url in urls)
        assert (await stack.http.get("/")).status_code == 303  # no cookie: back to login

        # At 400 px the app sits below the chat, and nothing scrolls sideways.
        chat = await page.locator(".chat").bounding_box()
        side = await page.locator(".side").bounding_box()
        assert chat and side
        assert side["y"] >= chat["y"] + chat["height"] - 1
        assert chat["width"] <= 400 and side["width"] <= 400
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways ({width}px)"
        await expect(page.get_by_label("Message")).to_be_visible()

        # The tabs work from the keyboard.
        await page.get_by_role("tab", name="Code").focus()
        await page.keyboard.press("ArrowLeft")
        await expect(page.get_by_role("tab", name="Preview")).to_be_focused()
        await expect(page.get_by_role("tab", name="Preview")).to_have_attribute(
            "aria-selected", "true"
        )
        await page.keyboard.press("ArrowRight")
        await expect(page.locator("#panel-code")).to_be_visible()

        # A session that ended says so, and keeps the text.
        await page.context.clear_cookies()
        await page.get_by_label("Message").fill("still there?")
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator("#message-error")).to_contain_text("Log in again")
        await expect(page.get_by_label("Message")).to_have_value("still there?")
