"""editFiles: the matcher (exact, then whitespace-tolerant lines, never fuzzier) and the tool's
all-or-nothing writes, against an in-memory workspace."""

from __future__ import annotations

import json

import pytest

from agent import edits
from agent.edits import Edit, EditError
from agent.tools import execute_tool
from sandboxes.base import SandboxFileNotFoundError, WriteEntry

PAGE = """export default function Page() {
  const items = ["a", "b"];
  return (
    <main className="p-8">
      <h1>Hello</h1>
      <p>One</p>
      <p>One</p>
    </main>
  );
}
"""


def test_exact_match_replaces_once() -> None:
    out = edits.apply(PAGE, "app/page.tsx", [Edit("<h1>Hello</h1>", "<h1>Bye</h1>")])
    assert out == PAGE.replace("<h1>Hello</h1>", "<h1>Bye</h1>")


def test_whitespace_tolerant_match_keeps_the_files_indentation() -> None:
    # The model lost the indentation and added trailing spaces: the lines still match.
    old = '<main className="p-8">  \n<h1>Hello</h1>\n'
    new = '<main className="p-4">\n  <h1>Hi</h1>\n'
    out = edits.apply(PAGE, "app/page.tsx", [Edit(old, new)])
    assert '    <main className="p-4">\n      <h1>Hi</h1>\n      <p>One</p>' in out
    assert out.count("\n") == PAGE.count("\n")


def test_trailing_whitespace_alone_is_tolerated() -> None:
    text = "a = 1   \nb = 2\n"
    assert edits.apply(text, "x.py", [Edit("a = 1\nb = 2", "a = 3\nb = 2")]) == "a = 3\nb = 2\n"


def test_a_near_miss_is_an_error_with_the_closest_lines() -> None:
    with pytest.raises(EditError) as caught:
        edits.apply(PAGE, "app/page.tsx", [Edit("<h1>Helo</h1>", "<h1>Bye</h1>")])
    message = str(caught.value)
    assert "not found" in message and "    5|       <h1>Hello</h1>" in message
    assert "readFiles" in message


def test_ambiguous_old_says_where() -> None:
    with pytest.raises(EditError) as caught:
        edits.apply(PAGE, "app/page.tsx", [Edit("<p>One</p>", "<p>Two</p>")])
    message = str(caught.value)
    assert "found 2 times" in message and "line 6" in message and "line 7" in message
    assert "replace_all" in message


def test_replace_all_changes_every_occurrence() -> None:
    out = edits.apply(PAGE, "app/page.tsx", [Edit("<p>One</p>", "<p>Two</p>", replace_all=True)])
    assert out.count("<p>Two</p>") == 2 and "<p>One</p>" not in out


def test_edits_apply_in_order_each_to_the_last_result() -> None:
    out = edits.apply(PAGE, "p", [Edit("Hello", "Hi there"), Edit("Hi there", "Howdy")])
    assert "<h1>Howdy</h1>" in out


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (Edit("", "x"), "`old` is empty"),
        (Edit("Hello", "Hello"), "changes nothing"),
    ],
)
def test_empty_and_no_op_edits_are_refused(edit: Edit, words: str) -> None:
    with pytest.raises(EditError, match=words):
        edits.apply(PAGE, "app/page.tsx", [edit])


def test_change_counts_lines_and_makes_a_compact_diff() -> None:
    after = PAGE.replace("<h1>Hello</h1>", "<h1>Bye</h1>\n      <p>New</p>")
    change = edits.change("app/page.tsx", PAGE, after)
    assert (change.added, change.removed) == (2, 1)
    assert "-      <h1>Hello</h1>" in change.diff and "+      <p>New</p>" in change.diff
    assert "export default" not in change.diff  # one line of context, not the whole file


class MemoryFiles:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = dict(files)
        self.writes: list[list[str]] = []

    async def read(self, path: str, format: str = "text"):
        if path not in self.files:
            raise SandboxFileNotFoundError(path)
        text = self.files[path]
        return text.encode() if format == "bytes" else text

    async def write_files(self, entries: list[WriteEntry]) -> list:
        self.writes.append([entry.path for entry in entries])
        for entry in entries:
            self.files[entry.path] = str(entry.data)
        return []


class MemorySandbox:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = MemoryFiles(files)


async def _edit(sandbox: MemorySandbox, *items: dict) -> object:
    return await execute_tool(sandbox, "editFiles", json.dumps({"edits": list(items)}))  # type: ignore[arg-type]


async def test_tool_writes_each_file_once_and_reports_the_change() -> None:
    sandbox = MemorySandbox({"app/page.tsx": PAGE, "lib/a.ts": "export const a = 1;\n"})
    outcome = await _edit(
        sandbox,
        {"path": "app/page.tsx", "old": "Hello", "new": "Hi"},
        {"path": "/home/user/lib/a.ts", "old": "a = 1", "new": "a = 2"},
        {"path": "app/page.tsx", "old": '"p-8"', "new": '"p-4"'},
    )
    assert outcome.ok, outcome.content
    assert sandbox.files.writes == [["app/page.tsx", "lib/a.ts"]]
    assert "app/page.tsx (+2 -2)" in outcome.content and "lib/a.ts (+1 -1)" in outcome.content
    assert outcome.written["lib/a.ts"] == "export const a = 2;\n"
    assert [d.path for d in outcome.diffs] == ["app/page.tsx", "lib/a.ts"]
    assert outcome.edits_applied == 3


async def test_one_failing_edit_changes_no_file() -> None:
    sandbox = MemorySandbox({"app/page.tsx": PAGE, "lib/a.ts": "export const a = 1;\n"})
    outcome = await _edit(
        sandbox,
        {"path": "lib/a.ts", "old": "a = 1", "new": "a = 2"},
        {"path": "app/page.tsx", "old": "Hello", "new": "Hi"},
        {"path": "app/page.tsx", "old": "<p>One</p>", "new": "<p>Two</p>"},
    )
    assert not outcome.ok and sandbox.files.writes == [] and outcome.written == {}
    assert "no file was changed" in outcome.content and "edit 2 of 2" in outcome.content
    assert outcome.edits_refused == 3


async def test_a_missing_file_is_named_with_what_to_do() -> None:
    outcome = await _edit(MemorySandbox({}), {"path": "app/x.tsx", "old": "a", "new": "b"})
    assert not outcome.ok and "app/x.tsx: the file does not exist" in outcome.content
    assert "createOrUpdateFiles" in outcome.content


async def _read(sandbox: MemorySandbox, arguments: dict, **options) -> list[dict]:
    outcome = await execute_tool(sandbox, "readFiles", json.dumps(arguments), **options)  # type: ignore[arg-type]
    return json.loads(outcome.content)


async def test_read_files_keeps_its_old_form_and_reads_line_ranges() -> None:
    text = "\n".join(f"line {n}" for n in range(1, 401))
    sandbox = MemorySandbox({"app/page.tsx": text, "b.ts": "b"})
    (whole, small) = await _read(sandbox, {"files": ["app/page.tsx", "b.ts"]})
    assert whole == {"path": "app/page.tsx", "content": text} and small["content"] == "b"
    (part,) = await _read(
        sandbox, {"files": ["/home/user/app/page.tsx"], "ranges": {"app/page.tsx": [120, 122]}}
    )
    assert part == {
        "path": "app/page.tsx",
        "lines": "120-122 of 400",
        "content": "line 120\nline 121\nline 122",
    }


async def test_an_oversized_file_shows_its_head_and_how_to_read_a_part() -> None:
    text = "\n".join(f"line {n:04}" for n in range(1, 2001))  # 20 000 characters
    (item,) = await _read(
        MemorySandbox({"big.ts": text}), {"files": ["big.ts"]}, max_result_chars=4_000
    )
    assert item["lines"].startswith("1-") and len(item["content"]) <= 4_000
    end = int(item["lines"].split("-")[1].split()[0])
    assert item["content"].endswith(f"line {end:04}")
    assert f'"ranges": {{"big.ts": [{end + 1}, ' in item["note"]
