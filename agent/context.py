"""What one model call sends: the transcript, trimmed to fit the context window.

The stored transcript stays whole; a *plan* says which entries a call leaves out. Plans are
sticky (what one call elided, the next elides too) and grow in large steps, so consecutive
requests share their prefix and providers' prompt caches keep working. The size of a request is
estimated from the last reply's reported `prompt_tokens` plus characters / 4 for what was added
since: no tokenizer is downloaded.

Never trimmed: the system prompt (entry 0), the user's request (entry 1), user messages (check
feedback, nudges) and the last few turns. First the oldest tool results become stubs that say
how to get them back; if that is not enough, the earliest turns' own text and arguments are
replaced by a one-line summary (their structure stays, so every tool call keeps its answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

KEEP_TURNS = 2
"""Turns (an assistant reply and its tool results) at the end that are sent whole; when they
alone do not fit, only the last one is."""
LOW_WATER = 0.6
"""When over budget, trim down to this share of it: a large step, so the next calls append."""
HARD_SHARE = 0.5
"""After the provider said the request was too long (its window may be smaller than
configured): trim to this share of what was refused, keeping only the last turn."""


@dataclass(frozen=True)
class Entry:
    seq: int
    role: str
    message: dict[str, Any]
    prompt_tokens: int | None = None
    """For an assistant entry: the prompt tokens its call reported (the request before it)."""


def tokens_of(value: Any) -> int:
    """Characters / 4 of the JSON the client sends: the same estimate the usage calibrates."""
    return len(json.dumps(value)) // 4 + 1


def _describe_call(call: dict[str, Any]) -> str:
    """A few words for a tool call: its name and the paths or command it was given."""
    name = call.get("function", {}).get("name", "a tool")
    try:
        args = json.loads(call.get("function", {}).get("arguments") or "{}")
    except json.JSONDecodeError:
        args = {}
    what = ""
    if isinstance(args, dict):
        if isinstance(args.get("command"), str):
            what = args["command"][:80]
        elif isinstance(args.get("files"), list):
            paths = [f if isinstance(f, str) else (f or {}).get("path", "?") for f in args["files"]]
            what = ", ".join(str(p) for p in paths[:6])
        elif isinstance(args.get("edits"), list):
            paths = {str((e or {}).get("path", "?")) for e in args["edits"] if isinstance(e, dict)}
            what = ", ".join(sorted(paths)[:6])
    return f"{name} {what}".strip()


def _calls_by_id(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    return {
        call["id"]: call
        for entry in entries
        if entry.role == "assistant"
        for call in entry.message.get("tool_calls") or []
    }


def stub_for(entry: Entry, calls: dict[str, dict[str, Any]]) -> dict[str, Any]:
    call = calls.get(entry.message.get("tool_call_id", ""), {})
    described = _describe_call(call) if call else "a tool call"
    again = "read it again" if "readFiles" in described else "run it again"
    return {
        "role": "tool",
        "tool_call_id": entry.message.get("tool_call_id"),
        "content": f"[output of {described} elided to fit the context window; {again} if needed]",
    }


def summarized(entry: Entry) -> dict[str, Any]:
    """An early assistant turn in one line, its calls kept (with empty arguments)."""
    calls = entry.message.get("tool_calls") or []
    did = "; ".join(_describe_call(call) for call in calls) or "replied in text"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": f"[earlier step, summarized to fit the context window: {did}]",
    }
    if calls:
        message["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": "{}"}} for call in calls
        ]
    return message


def render(entries: list[Entry], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages a plan sends: entries up to `upto`, with elided and summarized ones swapped."""
    elided, folded = set(plan.get("elided", [])), set(plan.get("summarized", []))
    calls = _calls_by_id(entries)
    messages = []
    for entry in entries:
        if entry.seq > plan["upto"]:
            break
        if entry.seq in elided:
            messages.append(stub_for(entry, calls))
        elif entry.seq in folded:
            messages.append(summarized(entry))
        else:
            messages.append(entry.message)
    return messages


def _protected(entries: list[Entry], keep_turns: int) -> set[int]:
    starts = [i for i, e in enumerate(entries) if e.role == "assistant"]
    first_kept = starts[-keep_turns] if len(starts) >= keep_turns else 0
    keep = {e.seq for e in entries[first_kept:]}
    keep |= {e.seq for e in entries if e.seq <= 1 or e.role in ("system", "user")}
    return keep


def estimate(entries: list[Entry], plan: dict[str, Any], tools: list[dict[str, Any]]) -> int:
    """Tokens the plan's request will take: the last call's reported size, calibrated, plus
    characters / 4 for everything sent differently or added since."""
    messages = render(entries, plan)
    raw = tokens_of(messages) + tokens_of(tools)
    last = next((e for e in reversed(entries) if e.role == "assistant" and e.prompt_tokens), None)
    if last is None or not plan.get("previous"):
        return raw
    # The previous request as it was sent, by the previous plan: its true size was reported.
    previous = plan["previous"]
    before = [e for e in entries if e.seq < last.seq]
    sent_before = tokens_of(render(before, previous)) + tokens_of(tools)
    return max(0, raw + (last.prompt_tokens or 0) - sent_before)


def make_plan(
    entries: list[Entry],
    previous: dict[str, Any] | None,
    tools: list[dict[str, Any]],
    budget: int,
    *,
    hard: bool = False,
) -> dict[str, Any]:
    """What to send now: the previous plan extended to the newest entry, trimmed if over.

    `hard` (after a context-length error) trims further and keeps only the last turn.
    """
    plan: dict[str, Any] = {
        "upto": entries[-1].seq,
        "elided": list(previous.get("elided", [])) if previous else [],
        "summarized": list(previous.get("summarized", [])) if previous else [],
        "budget": budget,
        "hard": hard,
        "previous": _bare(previous),
    }
    size = estimate(entries, plan, tools)
    if size <= budget and not hard:
        plan["estimate"] = size
        return plan
    target = int(min(budget, size) * HARD_SHARE) if hard else int(budget * LOW_WATER)
    calls = _calls_by_id(entries)
    # The last turns stay whole unless they alone do not fit: then only the last one does.
    for keep_turns in (1,) if hard else (KEEP_TURNS, 1):
        size = _trim(entries, plan, calls, _protected(entries, keep_turns), size, target)
        if size <= budget:
            break
    plan["elided"].sort()
    plan["summarized"].sort()
    plan["estimate"] = estimate(entries, plan, tools)
    plan["new_elided"] = len(plan["elided"]) - len(previous.get("elided", []) if previous else [])
    plan["new_summarized"] = len(plan["summarized"]) - len(
        previous.get("summarized", []) if previous else []
    )
    return plan


def _trim(
    entries: list[Entry],
    plan: dict[str, Any],
    calls: dict[str, dict[str, Any]],
    keep: set[int],
    size: int,
    target: int,
) -> int:
    """Add to the plan's elisions, oldest first, until `size` is down to `target`."""
    # 1. Tool results become stubs.
    for entry in entries:
        if size <= target:
            return size
        if entry.role != "tool" or entry.seq in keep or entry.seq in plan["elided"]:
            continue
        saved = tokens_of(entry.message) - tokens_of(stub_for(entry, calls))
        if saved > 0:
            plan["elided"].append(entry.seq)
            size -= saved
    # 2. Then the earliest turns' text and arguments become one-line summaries.
    for entry in entries:
        if size <= target:
            return size
        if entry.role != "assistant" or entry.seq in keep or entry.seq in plan["summarized"]:
            continue
        saved = tokens_of(entry.message) - tokens_of(summarized(entry))
        if saved > 0:
            plan["summarized"].append(entry.seq)
            size -= saved
    return size


def _bare(plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """A plan without its own `previous` chain (only one step back is needed)."""
    if plan is None:
        return None
    return {k: v for k, v in plan.items() if k != "previous"}
