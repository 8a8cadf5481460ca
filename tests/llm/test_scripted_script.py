"""Scripts are validated when loaded, and errors name the bad field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripted_llm import DEMO_SCRIPT, ScriptError, load_script, scripted_llm_server


def _error(data: Any) -> str:
    with pytest.raises(ScriptError) as caught:
        load_script(data)
    return str(caught.value)


@pytest.mark.parametrize(
    ("script", "where", "words"),
    [
        ({}, "(top level)", "`conversations` or a `default`"),
        (
            {"default": {"turns": [{}]}},
            "default.turns.0",
            "needs `content` or `tool_calls`",
        ),
        ({"default": {"turns": []}}, "default.turns", "at least 1"),
        (
            {"conversations": [{"turns": [{"content": "x"}]}]},
            "conversations",
            "conversation 0 needs `match`",
        ),
        (
            {"default": {"turns": [{"content": "x", "faults": [{"status": 200}]}]}},
            "default.turns.0.faults.0.status",
            "greater than or equal to 400",
        ),
        (
            {"default": {"turns": [{"content": "x", "faults": [{}]}]}},
            "default.turns.0.faults.0",
            "a fault needs",
        ),
        (
            {"default": {"turns": [{"content": "x", "faults": [{"malformed_arguments": True}]}]}},
            "default.turns.0",
            "needs a turn with `tool_calls`",
        ),
        (
            {"default": {"turns": [{"content": "x", "faults": [{"retry_after": 1}]}]}},
            "default.turns.0.faults.0",
            "need `status`",
        ),
        (
            {"default": {"turns": [{"content": "x", "colour": "red"}]}},
            "default.turns.0.colour",
            "Extra inputs are not permitted",
        ),
        (
            {"default": {"turns": [{"tool_calls": [{"name": ""}]}]}},
            "default.turns.0.tool_calls.0.name",
            "at least 1 character",
        ),
        (
            {"default": {"turns": [{"content": "x"}], "after_last": "loop"}},
            "default.after_last",
            "'repeat' or 'error'",
        ),
        (
            {
                "conversations": [
                    {"match": "a", "name": "same", "turns": [{"content": "x"}]},
                    {"match": "b", "name": "same", "turns": [{"content": "x"}]},
                ]
            },
            "(top level)",
            "repeated: ['same']",
        ),
    ],
)
def test_invalid_scripts_name_the_field(script: dict[str, Any], where: str, words: str):
    message = _error(script)
    assert message.startswith("invalid script <dict>:")
    assert f"  {where}: " in message
    assert words in message


def test_files_that_are_missing_or_not_json(tmp_path: Path):
    missing = _error(tmp_path / "nope.json")
    assert "cannot read script" in missing and "nope.json" in missing
    broken = tmp_path / "broken.json"
    broken.write_text('{"default": ')
    assert "not JSON (line 1" in _error(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    assert "top level must be a JSON object" in _error(listed)


def test_file_references_are_read_relative_to_the_script(tmp_path: Path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "page.tsx").write_text("export default function Page() {}\n")
    script = {
        "default": {
            "turns": [
                {
                    "tool_calls": [
                        {
                            "name": "createOrUpdateFiles",
                            "arguments": {
                                "files": [
                                    {"path": "app/page.tsx", "content": {"$file": "pages/page.tsx"}}
                                ]
                            },
                        }
                    ]
                }
            ]
        }
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    loaded = load_script(path)
    assert loaded.default is not None
    arguments = loaded.default.turns[0].tool_calls[0].arguments
    assert isinstance(arguments, dict)
    assert arguments["files"][0]["content"] == "export default function Page() {}\n"

    assert "needs a script loaded from a file" in _error(script)
    assert load_script(script, base_dir=tmp_path).default == loaded.default
    (tmp_path / "pages" / "page.tsx").unlink()
    message = _error(path)
    assert "script.default.turns[0].tool_calls[0].arguments.files[0].content" in message
    assert "cannot read $file 'pages/page.tsx'" in message


async def test_the_server_refuses_an_invalid_script_before_listening():
    with pytest.raises(ScriptError):
        async with scripted_llm_server({"default": {"turns": [{}]}}):
            pass


def test_the_demo_script_loads_with_every_file_inlined():
    script = load_script(DEMO_SCRIPT)
    text = script.model_dump_json()
    assert "$file" not in text
    assert [name for name, _ in script.named_conversations()] == ["dark", "todo"]
