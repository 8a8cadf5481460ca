"""Images in the UI, in a real Chromium: pasted and dropped images show as removable
thumbnails, a refusal keeps the text and the images by the message box, the conversation
shows the images and opens them full size. The model is text-only, so the run also ends with
the clear ERROR a model without vision gets."""

from __future__ import annotations

import base64
import re

import pytest
from playwright.async_api import Page, expect

from tests.image_samples import SVG, image_bytes

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TEXT_ONLY = {
    "text_only_models": ["text-only"],
    "default": {"turns": [{"content": "<task_summary>Done.</task_summary>"}]},
}
REFUSED = "the model text-only does not accept images; remove the images or choose a vision model"

TRANSFER = """([selector, kind, files]) => {
  const transfer = new DataTransfer();
  for (const [name, type, data] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  const target = document.querySelector(selector);
  const event = kind === "paste"
    ? new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true })
    : new DragEvent(kind, { dataTransfer: transfer, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
  return event.defaultPrevented;
}"""


async def hand_over(page: Page, selector: str, kind: str, files: list[tuple[str, str, bytes]]):
    """Paste or drop files as the browser does (a DataTransfer holding File objects)."""
    encoded = [(name, type_, base64.b64encode(data).decode()) for name, type_, data in files]
    if kind == "drop":
        await page.evaluate(TRANSFER, [selector, "dragover", encoded])
    return await page.evaluate(TRANSFER, [selector, kind, encoded])


async def test_paste_drop_refusal_and_the_conversation(api_stack, new_page) -> None:
    screenshot = image_bytes("PNG", (300, 200))
    async with api_stack(TEXT_ONLY, qai_model="text-only") as stack:
        page = await new_page(stack.url)
        await page.goto("/")
        prompt = page.get_by_label("Describe your app")
        await prompt.fill("Build this page")
        # A pasted screenshot (browsers call it image.png) and a dropped SVG.
        assert await hand_over(page, "#prompt", "paste", [("image.png", "image/png", screenshot)])
        assert await hand_over(page, "#create-form", "drop", [("logo.svg", "image/svg+xml", SVG)])
        thumbnails = page.locator("#create-form .attachment")
        await expect(thumbnails).to_have_count(2)
        await expect(thumbnails.nth(0)).to_contain_text("pasted-1.png")
        await page.get_by_role("button", name="Create").click()
        await expect(page.locator("#create-error")).to_contain_text("logo.svg is an SVG")
        await expect(prompt).to_have_value("Build this page")
        await expect(thumbnails).to_have_count(2)  # nothing lost
        await page.get_by_role("button", name="Remove logo.svg").click()
        await expect(thumbnails).to_have_count(1)
        await page.get_by_role("button", name="Create").click()
        await page.wait_for_url(re.compile(r"/projects/"))

        # The image is in the conversation and opens full size.
        shown = page.locator(".msg-user .msg-image img").first
        await expect(shown).to_be_visible(timeout=60_000)
        await expect(shown).to_have_attribute("alt", "pasted-1.png")
        await page.wait_for_function(
            "() => document.querySelector('.msg-user .msg-image img').naturalWidth === 300"
        )
        await shown.click()
        lightbox = page.locator("#lightbox")
        await expect(lightbox).to_be_visible()
        await page.wait_for_function(
            "() => document.querySelector('#lightbox img').naturalWidth === 300"
        )
        await lightbox.get_by_role("button", name="Close").click()
        await expect(lightbox).to_be_hidden()

        # The text-only model refuses the images: a clear ERROR in the conversation.
        error = page.locator(".msg-error .msg-body")
        await expect(error).to_have_text(REFUSED, timeout=120_000)

        # An image dropped onto the message box goes with the follow-up, then the box empties.
        message = page.get_by_label("Message")
        await message.fill("Use this logo instead")
        logo = image_bytes("JPEG", (120, 90), color=(0, 0, 200))
        assert await hand_over(page, "#message", "drop", [("logo.jpg", "image/jpeg", logo)])
        composer = page.locator("#message-form .attachment")
        await expect(composer).to_have_count(1)
        await message.press("Enter")
        await expect(composer).to_have_count(0)
        await expect(message).to_have_value("")
        await expect(page.locator(".msg-user .msg-image img")).to_have_count(2, timeout=60_000)
        await expect(page.locator(".msg-user .msg-image img").nth(1)).to_have_attribute(
            "alt", "logo.jpg"
        )
