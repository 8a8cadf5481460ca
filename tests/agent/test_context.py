"""What a model call sends: plans that elide old tool results in large, sticky steps, then
summarize early steps, and never touch the system prompt, the request or the last turns."""

from __future__ import annotations

import json

from agent.context import Entry, make_plan, render

TOOLS: list[dict] = []


def transcript(turns: int, size: int) -> list[Entry]:
    entries = [
        Entry(0, "system", {"role": "system", "content": "system"}),
        Entry(1, "user", {"role": "user", "content": "build it"}),
    ]
    for n in range(turns):
        call = {
            "id": f"c{n}",
            "type": "function",
            "function": {"name": "readFiles", "arguments": json.dumps({"files": [f"f{n}.ts"]})},
        }
        entries.append(
            Entry(
                len(entries),
                "assistant",
                {"role": "assistant", "content": "x" * 400, "tool_calls": [call]},
            )
        )
        entries.append(
            Entry(
                len(entries),
                "tool",
                {"role": "tool", "tool_call_id": f"c{n}", "content": "r" * size},
            )
        )
    return entries


def test_a_request_that_fits_is_sent_whole() -> None:
    entries = transcript(3, 1_000)
    plan = make_plan(entries, None, TOOLS, budget=10_000)
    assert plan["elided"] == [] and render(entries, plan) == [e.message for e in entries]


def test_over_budget_elides_the_oldest_results_in_one_large_step_and_keeps_them_elided() -> None:
    entries = transcript(10, 4_000)  # about 10 x 1 100 tokens
    plan = make_plan(entries, None, TOOLS, budget=8_000)
    sent = render(entries, plan)
    assert plan["estimate"] <= 8_000 * 0.6
    assert sent[0] == entries[0].message and sent[1] == entries[1].message
    assert sent[-1] == entries[-1].message and sent[-3] == entries[-3].message  # last two turns
    assert sent[3]["content"].startswith("[output of readFiles f0.ts elided")
    # The next call keeps every elision and adds none while it fits: the prefix is unchanged.
    grown = [*transcript(11, 4_000)]
    following = make_plan(grown, plan, TOOLS, budget=8_000)
    assert following["elided"] == plan["elided"]
    assert render(grown, following)[: len(sent) - 4] == sent[: len(sent) - 4]


def test_when_stubs_are_not_enough_early_steps_are_summarized_but_keep_their_calls() -> None:
    entries = transcript(30, 200)  # the assistants' own text is what is large now
    plan = make_plan(entries, None, TOOLS, budget=2_500)
    assert plan["summarized"]
    first = render(entries, plan)[2]
    assert (
        first["content"].startswith("[earlier step, summarized")
        and "readFiles f0.ts" in first["content"]
    )
    assert (
        first["tool_calls"][0]["id"] == "c0"
        and first["tool_calls"][0]["function"]["arguments"] == "{}"
    )


def test_a_harder_plan_after_a_context_error_halves_the_request_and_keeps_one_turn() -> None:
    entries = transcript(6, 8_000)
    plan = make_plan(entries, None, TOOLS, budget=100_000)
    assert plan["elided"] == []
    harder = make_plan(entries, plan, TOOLS, budget=100_000, hard=True)
    assert harder["hard"] and harder["estimate"] <= plan["estimate"] / 2
    assert entries[-1].seq not in harder["elided"] and entries[3].seq in harder["elided"]
