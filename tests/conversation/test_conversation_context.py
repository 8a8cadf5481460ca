"""The seed's conversation rules, one test per rule, plus property tests for the bounds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conversation import (
    DEFAULT_ENTRY_MAX_LENGTH,
    DEFAULT_HISTORY_CHAR_LIMIT,
    DEFAULT_SUMMARY_MAX_LENGTH,
    TRUNCATION_MARKER,
    build_conversation_payload,
    collapse_whitespace,
    compute_rolling_conversation_summary,
    format_conversation_history,
    strip_tag_like,
)


class Role(StrEnum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"


@dataclass
class Msg:
    role: str
    content: str
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def user(content: str) -> Msg:
    return Msg("USER", content)


def assistant(content: str) -> Msg:
    return Msg("ASSISTANT", content)


def test_defaults_are_the_seeds() -> None:
    assert (DEFAULT_HISTORY_CHAR_LIMIT, DEFAULT_SUMMARY_MAX_LENGTH, DEFAULT_ENTRY_MAX_LENGTH) == (
        6000,
        2000,
        400,
    )
    assert TRUNCATION_MARKER == "[Earlier conversation truncated]"


# -- format_conversation_history ---------------------------------------------


def test_history_labels_roles_and_keeps_chronological_order() -> None:
    history = format_conversation_history([user("make a todo app"), assistant("done")], 6000)
    assert history == "User: make a todo app\nAssistant: done"


def test_history_accepts_str_enum_roles() -> None:
    history = format_conversation_history([Msg(Role.USER, "a"), Msg(Role.ASSISTANT, "b")], 100)
    assert history == "User: a\nAssistant: b"


def test_history_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError, match="SYSTEM"):
        format_conversation_history([Msg("SYSTEM", "x")], 100)


def test_history_collapses_whitespace_and_trims() -> None:
    history = format_conversation_history([user("  add\n\n a   button\t ")], 100)
    assert history == "User: add a button"


def test_history_of_nothing_is_empty() -> None:
    assert format_conversation_history([], 6000) == ""


def test_history_counts_length_plus_one_per_entry() -> None:
    # "User: aaaa" is 10 chars, costing 11; two entries cost exactly 22.
    messages = [user("aaaa"), user("bbbb")]
    assert format_conversation_history(messages, 22) == "User: aaaa\nUser: bbbb"
    assert format_conversation_history(messages, 21) == f"{TRUNCATION_MARKER}\nUser: bbbb"


def test_history_keeps_newest_and_drops_from_the_oldest() -> None:
    messages = [user("one"), assistant("two"), user("three")]
    # "Assistant: two" costs 15, "User: three" costs 12.
    history = format_conversation_history(messages, 27)
    assert history == f"{TRUNCATION_MARKER}\nAssistant: two\nUser: three"


def test_history_stops_at_first_entry_that_does_not_fit() -> None:
    # The middle entry is too big; the small oldest one is not reached even though it would fit.
    messages = [user("a"), assistant("x" * 50), user("b")]
    assert format_conversation_history(messages, 20) == f"{TRUNCATION_MARKER}\nUser: b"


def test_history_always_keeps_the_newest_entry_even_over_the_limit() -> None:
    messages = [user("old"), assistant("y" * 100)]
    assert (
        format_conversation_history(messages, 10) == f"{TRUNCATION_MARKER}\nAssistant: {'y' * 100}"
    )
    assert format_conversation_history([assistant("y" * 100)], 10) == f"Assistant: {'y' * 100}"


# -- build_conversation_payload -----------------------------------------------


def test_payload_with_only_the_request() -> None:
    assert build_conversation_payload(None, [], None, "build it") == (
        "<user_request>\nbuild it\n</user_request>"
    )


def test_payload_sections_in_order_separated_by_blank_lines() -> None:
    first, reply, latest = user("first"), assistant("reply"), user("second")
    payload = build_conversation_payload(
        "  the summary \n", [first, reply, latest], latest, "second"
    )
    assert payload == (
        "<conversation_summary>\nthe summary\n</conversation_summary>\n\n"
        "<conversation_history>\nUser: first\nAssistant: reply\n</conversation_history>\n\n"
        "<user_request>\nsecond\n</user_request>"
    )


def test_payload_skips_blank_summary_and_empty_history() -> None:
    latest = user("only")
    assert build_conversation_payload(" \n\t", [latest], latest, "only") == (
        "<user_request>\nonly\n</user_request>"
    )


def test_payload_excludes_the_latest_user_message_by_id_only() -> None:
    # Same text, different id: only the latest one is excluded from history.
    earlier, latest = user("again"), user("again")
    payload = build_conversation_payload(None, [earlier, latest], latest, "again")
    assert "<conversation_history>\nUser: again\n</conversation_history>" in payload


def test_payload_without_latest_user_message_keeps_all_history() -> None:
    payload = build_conversation_payload(None, [user("a"), assistant("b")], None, "c")
    assert "User: a\nAssistant: b" in payload


def test_payload_keeps_the_request_verbatim() -> None:
    request = "  keep   this\n\nexactly  "
    assert build_conversation_payload(None, [], None, request).endswith(
        f"<user_request>\n{request}\n</user_request>"
    )


def test_payload_passes_the_history_limit() -> None:
    messages = [user("a" * 30), assistant("b" * 30)]
    payload = build_conversation_payload(None, messages, None, "next", history_char_limit=50)
    assert TRUNCATION_MARKER in payload
    assert "a" * 30 not in payload


# -- compute_rolling_conversation_summary ---------------------------------------


def test_collapse_and_strip_helpers() -> None:
    assert collapse_whitespace("\t a \n\n b  ") == "a b"
    assert strip_tag_like("x<a href='y'>z</a>") == "x z "


def test_summary_first_entry() -> None:
    assert compute_rolling_conversation_summary(None, "make  a\napp", "done") == (
        "User: make a app\nAssistant: done"
    )


def test_summary_appends_to_stripped_previous() -> None:
    summary = compute_rolling_conversation_summary("  User: a\nAssistant: b \n", "c", "d")
    assert summary == "User: a\nAssistant: b\nUser: c\nAssistant: d"


def test_summary_strips_tags_from_the_assistant_only() -> None:
    summary = compute_rolling_conversation_summary(
        None, "<b>keep</b>", "<task_summary>Built\nthe <em>page</em></task_summary>"
    )
    assert summary == "User: <b>keep</b>\nAssistant: Built the page"


def test_summary_tag_becomes_a_space_not_nothing() -> None:
    assert compute_rolling_conversation_summary(None, "u", "one<br>two").endswith("one two")


def test_summary_cuts_each_side_to_entry_max_length() -> None:
    summary = compute_rolling_conversation_summary(None, "u" * 500, "a" * 500)
    assert summary == f"User: {'u' * 400}\nAssistant: {'a' * 400}"
    short = compute_rolling_conversation_summary(None, "abcdef", "ghijkl", entry_max_length=3)
    assert short == "User: abc\nAssistant: ghi"


def test_summary_collapses_before_cutting() -> None:
    summary = compute_rolling_conversation_summary(
        None, "a" + " " * 50 + "b", "x", entry_max_length=3
    )
    assert summary.startswith("User: a b\n")


def test_summary_at_exactly_max_length_is_not_truncated() -> None:
    entry = "User: u\nAssistant: a"
    assert compute_rolling_conversation_summary(None, "u", "a", max_length=len(entry)) == entry


def test_summary_truncation_drops_partial_first_line_and_adds_marker() -> None:
    previous = "User: first question\nAssistant: first answer"
    summary = compute_rolling_conversation_summary(previous, "second", "answer two", max_length=40)
    # Last 40 chars: "first answer\nUser: second\nAssistant: answer two" cut mid-line.
    assert summary == f"{TRUNCATION_MARKER}\nUser: second\nAssistant: answer two"


def test_summary_truncation_without_line_break_keeps_the_tail() -> None:
    summary = compute_rolling_conversation_summary(None, "u", "a" * 100, max_length=20)
    assert summary == f"{TRUNCATION_MARKER}\n{'a' * 20}"


def test_summary_truncation_strips_leading_whitespace_of_the_kept_tail() -> None:
    # The tail after the first line break starts with spaces from the user text.
    previous = "User: x\nAssistant: y"
    summary = compute_rolling_conversation_summary(previous, "q", "r", max_length=25)
    assert summary.startswith(f"{TRUNCATION_MARKER}\n")
    assert not summary.removeprefix(f"{TRUNCATION_MARKER}\n")[0].isspace()


# -- properties -------------------------------------------------------------------

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=120)
messages_strategy = st.lists(
    st.builds(Msg, role=st.sampled_from(["USER", "ASSISTANT"]), content=texts), max_size=12
)


@given(messages=messages_strategy, limit=st.integers(min_value=0, max_value=400))
def test_history_bounds(messages: list[Msg], limit: int) -> None:
    history = format_conversation_history(messages, limit)
    if not messages:
        assert history == ""
        return
    lines = history.split("\n")
    truncated = lines[0] == TRUNCATION_MARKER
    entries = lines[1:] if truncated else lines
    # Marker present exactly when something was dropped.
    assert truncated == (len(entries) < len(messages))
    # The newest message is always last.
    assert entries[-1].split(": ", 1)[1] == " ".join(messages[-1].content.split())
    # Within the limit, unless only the newest entry was kept.
    cost = sum(len(entry) + 1 for entry in entries)
    assert cost <= limit or len(entries) == 1


@given(messages=messages_strategy)
def test_history_never_truncates_within_a_generous_limit(messages: list[Msg]) -> None:
    history = format_conversation_history(messages, 10**6)
    assert TRUNCATION_MARKER not in history.split("\n")[:1]
    assert len(history.split("\n")) == len(messages) or not messages


@given(
    previous=st.one_of(st.none(), st.text(max_size=3000)),
    user_text=st.text(max_size=600),
    assistant_text=st.text(max_size=600),
    max_length=st.integers(min_value=1, max_value=2500),
    entry_max=st.integers(min_value=0, max_value=500),
)
def test_summary_bounds(
    previous: str | None, user_text: str, assistant_text: str, max_length: int, entry_max: int
) -> None:
    summary = compute_rolling_conversation_summary(
        previous, user_text, assistant_text, max_length=max_length, entry_max_length=entry_max
    )
    marker = f"{TRUNCATION_MARKER}\n"
    if summary.startswith(marker):
        assert len(summary) <= max_length + len(marker)
    else:
        assert len(summary) <= max_length
    # The newest exchange survives intact, at the end, whenever it is shorter than the bound.
    newest = (
        f"User: {collapse_whitespace(user_text)[:entry_max]}\n"
        f"Assistant: {collapse_whitespace(strip_tag_like(assistant_text))[:entry_max]}"
    )
    if len(newest) < max_length:
        assert summary.endswith(newest)


@given(user_text=st.text(max_size=200), assistant_text=st.text(max_size=200))
def test_summary_entries_have_no_raw_whitespace_runs(user_text: str, assistant_text: str) -> None:
    summary = compute_rolling_conversation_summary(None, user_text, assistant_text)
    user_line, assistant_line = summary.split("\n")
    assert user_line.startswith("User: ")
    assert assistant_line.startswith("Assistant: ")
    for line in (user_line, assistant_line):
        body = line.split(": ", 1)[1]
        assert body == " ".join(body.split())
