"""The `usage` object replies and projects show, its optional cost, and the CLI's line for it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from starter import usage_line
from storage.models import Message, MessageRole, MessageType
from storage.views import Prices, message_view, usage_view


def test_usage_has_totals_and_a_cost_only_with_prices() -> None:
    assert usage_view(1_000_000, 200_000, 400_000, 7) == {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 200_000,
        "cached_tokens": 400_000,
        "total_tokens": 1_200_000,
        "model_calls": 7,
    }
    prices = Prices(Decimal("2.50"), Decimal("10"), Decimal("1.25"))
    # 600k uncached at 2.50, 400k cached at 1.25, 200k out at 10 per million.
    assert usage_view(1_000_000, 200_000, 400_000, 7, prices)["cost"] == 1.5 + 0.5 + 2.0
    # Without a cached price, cached tokens cost the input price.
    no_cache = Prices(Decimal("2.50"), Decimal("10"))
    assert usage_view(1_000_000, 0, 400_000, 1, no_cache)["cost"] == 2.5
    assert "cost" not in usage_view(10, 10, 0, 1, Prices(input=Decimal(1)))


def test_assistant_messages_carry_usage_and_user_messages_do_not() -> None:
    reply = Message(
        project_id=None,
        role=MessageRole.ASSISTANT,
        type=MessageType.RESULT,
        content="done",
        prompt_tokens=900,
        completion_tokens=100,
        cached_tokens=512,
        model_calls=3,
    )
    question = Message(project_id=None, role=MessageRole.USER, type=MessageType.RESULT, content="q")
    for message in (reply, question):
        message.created_at = message.updated_at = datetime(2026, 1, 1)
    assert message_view(reply)["usage"]["total_tokens"] == 1000
    assert "usage" not in message_view(question)
    line = usage_line(message_view(reply, prices=Prices(Decimal(1), Decimal(2)))["usage"])
    assert line == (
        "1,000 (prompt 900 of which cached 512, completion 100), 3 model calls, cost 0.0011"
    )


def test_the_conversation_shows_a_replys_usage_and_its_edits() -> None:
    from api.templating import render
    from api.ui.state import ProjectState

    reply = {
        "message_id": "m2",
        "role": "ASSISTANT",
        "type": "RESULT",
        "content": "Renamed it.",
        "created_at": "2026-01-01T00:00:00+00:00",
        "reply_to_id": "m1",
        "fragment": None,
        "status": "",
        "usage": usage_view(12_000, 345, 4_096, 3, Prices(Decimal(2), Decimal(8))),
        "edits": [
            {
                "path": "app/page.tsx",
                "added": 1,
                "removed": 1,
                "diff": "--- a/app/page.tsx\n+++ b/app/page.tsx\n@@ -4 +4 @@\n"
                "-<h1>Old</h1>\n+<h1>New</h1>",
            }
        ],
    }
    html = render("conversation.html", state=ProjectState("p", "P", True, messages=[reply]))
    assert "12,345 tokens · prompt 12,000 (4,096 cached) · completion 345 · 3 model calls" in html
    assert "cost 0.0268" in html  # (12 000 x 2 + 345 x 8) / 1 000 000
    assert '<code>app/page.tsx</code> <span class="added">+1</span>' in html
    assert '<span class="del">-&lt;h1&gt;Old&lt;/h1&gt;</span>' in html
    assert '<span class="add">+&lt;h1&gt;New&lt;/h1&gt;</span>' in html
