"""Targeted edits of a file's text: find `old`, put `new` in its place, or say why not.

Matching is exact first; with no exact match, a line-based match that ignores trailing
whitespace, then indentation too (the passes of dyad's search/replace processor). It is never
fuzzier than whitespace: a near miss is an error naming the closest lines, not a guess.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

MAX_SHOWN_MATCHES = 8
CLOSEST_CONTEXT = 2
"""Lines shown around the closest match of an `old` that was not found."""
MAX_DIFF_CHARS = 4_000


@dataclass(frozen=True)
class Edit:
    old: str
    new: str
    replace_all: bool = False


class EditError(ValueError):
    """An edit that cannot be applied; the message tells the model what to do about it."""


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    line: int
    """1-based line of the match's first character."""
    indent_from: str = ""
    indent_to: str = ""
    """Set for an indentation-tolerant match: `old`'s indentation, and the file's."""


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(index + 1)
    return starts


def _line_of(starts: list[int], offset: int) -> int:
    low, high = 0, len(starts) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if starts[middle] <= offset:
            low = middle
        else:
            high = middle - 1
    return low + 1


def _exact(text: str, old: str) -> list[_Span]:
    starts = _line_starts(text)
    spans, at = [], text.find(old)
    while at != -1:
        spans.append(_Span(at, at + len(old), _line_of(starts, at)))
        at = text.find(old, at + len(old))
    return spans


def _old_lines(old: str) -> list[str]:
    lines = old.split("\n")
    if len(lines) > 1 and lines[-1].strip() == "":
        lines.pop()  # `old` ended with a newline: it names whole lines
    return lines


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _by_lines(text: str, old: str, normalise) -> list[_Span]:
    """Whole-line matches of `old` where each line compares equal after `normalise`."""
    wanted = [normalise(line) for line in _old_lines(old)]
    if not any(wanted):
        return []
    lines = text.split("\n")
    have = [normalise(line) for line in lines]
    starts = _line_starts(text)
    size = len(wanted)
    spans: list[_Span] = []
    index = 0
    while index + size <= len(lines):
        if have[index : index + size] == wanted:
            last = index + size - 1
            first_old = next(line for line in _old_lines(old) if line.strip())
            first_file = next(line for line in lines[index : last + 1] if line.strip())
            spans.append(
                _Span(
                    starts[index],
                    starts[last] + len(lines[last]),
                    index + 1,
                    indent_from=_indent(first_old),
                    indent_to=_indent(first_file),
                )
            )
            index += size
        else:
            index += 1
    return spans


def find(text: str, old: str) -> list[_Span]:
    """Where `old` occurs: exactly, else ignoring trailing whitespace, else indentation too."""
    spans = _exact(text, old)
    if spans:
        return spans
    spans = _by_lines(text, old, str.rstrip)
    if spans:
        return spans
    return _by_lines(text, old, str.strip)


def _reindent(new: str, span: _Span) -> str:
    """`new` shifted as the file's lines are shifted against `old`'s (line matches only)."""
    lines = new.split("\n")
    if lines and lines[-1] == "" and len(lines) > 1:
        lines.pop()
    if span.indent_from == span.indent_to:
        return "\n".join(lines)
    shifted = []
    for line in lines:
        if line.strip() and line.startswith(span.indent_from):
            line = span.indent_to + line[len(span.indent_from) :]
        shifted.append(line)
    return "\n".join(shifted)


def closest_lines(text: str, old: str) -> str:
    """The lines of `text` most like `old`, numbered, with a little context."""
    wanted = [line.strip() for line in _old_lines(old)][:6]
    lines = text.split("\n")
    if not lines or not any(wanted):
        return ""
    best, best_score = 0, -1.0
    for index in range(max(1, len(lines) - len(wanted) + 1)):
        window = lines[index : index + len(wanted)]
        score = sum(
            difflib.SequenceMatcher(None, a.strip(), b, autojunk=False).ratio()
            for a, b in zip(window, wanted, strict=False)
        )
        if score > best_score:
            best, best_score = index, score
    first = max(0, best - CLOSEST_CONTEXT)
    last = min(len(lines), best + len(wanted) + CLOSEST_CONTEXT)
    return "\n".join(f"{number + 1:>5}| {lines[number]}" for number in range(first, last))


def _preview(text: str, limit: int = 60) -> str:
    line = text.strip().split("\n")[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def apply(text: str, path: str, edits: list[Edit]) -> str:
    """`text` with every edit applied in order, each to the result of the last.

    Raises EditError for the first edit that cannot apply; the caller writes nothing then.
    """
    for number, edit in enumerate(edits, start=1):
        which = f"edit {number} of {len(edits)} on {path}" if len(edits) > 1 else f"{path}"
        if edit.old == "":
            raise EditError(
                f"{which}: `old` is empty. To create a file or replace all of it, use "
                "createOrUpdateFiles."
            )
        if edit.old == edit.new:
            raise EditError(f"{which}: `old` and `new` are the same, so the edit changes nothing.")
        spans = find(text, edit.old)
        if not spans:
            closest = closest_lines(text, edit.old)
            hint = f" The closest lines are:\n{closest}\n" if closest else " "
            raise EditError(
                f"{which}: `old` was not found (not even ignoring whitespace).{hint}"
                "Read the file again with readFiles and copy `old` exactly from it."
            )
        if len(spans) > 1 and not edit.replace_all:
            where = "\n".join(
                f"  line {span.line}: {_preview(text[span.start : span.end])}"
                for span in spans[:MAX_SHOWN_MATCHES]
            )
            more = f"\n  ... and {len(spans) - MAX_SHOWN_MATCHES} more" if len(spans) > 8 else ""
            raise EditError(
                f"{which}: `old` was found {len(spans)} times:\n{where}{more}\nAdd surrounding "
                'lines to `old` so it occurs once, or set "replace_all": true to change all.'
            )
        pieces, at = [], 0
        for span in spans:
            exact = span.indent_from == span.indent_to and text[span.start : span.end] == edit.old
            pieces.append(text[at : span.start])
            pieces.append(edit.new if exact else _reindent(edit.new, span))
            at = span.end
        pieces.append(text[at:])
        changed = "".join(pieces)
        if changed == text:
            raise EditError(f"{which}: the edit changes nothing.")
        text = changed
    return text


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int
    removed: int
    diff: str


def change(path: str, before: str, after: str) -> FileChange:
    """Lines added and removed, and a compact unified diff (bounded in size)."""
    lines = list(
        difflib.unified_diff(
            before.splitlines(),
            after.splitlines(),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
            n=1,
            lineterm="",
        )
    )
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    diff = "\n".join(lines)
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n[... diff cut at {MAX_DIFF_CHARS} characters ...]"
    return FileChange(path=path, added=added, removed=removed, diff=diff)
