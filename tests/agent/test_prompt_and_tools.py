"""The agent's pure pieces: the prompt tells the truth about the template, and the rules the
tools apply to model-given paths and commands."""

from __future__ import annotations

import pytest

from agent.prompt import clean_title, extract_task_summary, fallback_title, system_prompt
from agent.tools import TOOL_DEFINITIONS, bound, forbidden_command, relative_path
from sandboxes.base import InvalidPathError
from sandboxes.manifest import load_manifest, template_source


def test_prompt_names_every_component_and_package_of_the_template() -> None:
    manifest = load_manifest()
    prompt = system_prompt(
        components=manifest.components,
        preinstalled=manifest.preinstalled,
        port=manifest.port,
        notes=manifest.notes,
    )
    on_disk = sorted(p.stem for p in (template_source() / "components" / "ui").glob("*.tsx"))
    assert on_disk and all(name in prompt for name in on_disk)
    assert all(package in prompt for package in manifest.preinstalled)
    assert all(note in prompt for note in manifest.notes)
    assert "<task_summary>" in prompt and f"port {manifest.port}" in prompt


def test_tool_schemas_are_the_three_tools() -> None:
    names = [tool["function"]["name"] for tool in TOOL_DEFINITIONS]
    assert names == ["terminal", "createOrUpdateFiles", "readFiles"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("app/page.tsx", "app/page.tsx"),
        ("./app//page.tsx", "app/page.tsx"),
        ("/home/user/components/ui/button.tsx", "components/ui/button.tsx"),
    ],
)
def test_relative_path_accepts_workspace_paths(given: str, expected: str) -> None:
    assert relative_path(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("../etc/passwd", "does not name a file inside /home/user"),
        ("app/../../x", "does not name a file inside /home/user"),
        ("/etc/passwd", "outside /home/user"),
        ("/home/userx/a", "outside /home/user"),
        ("@/components/ui/button.tsx", "import alias"),
        ("", "does not name a file"),
    ],
)
def test_relative_path_refuses_escapes(given: str, reason: str) -> None:
    with pytest.raises(InvalidPathError, match=reason):
        relative_path(given)


@pytest.mark.parametrize(
    "command",
    ["npm run dev", "npm start", "npx next dev -p 3001", "cd app && next build", "yarn dev"],
)
def test_second_dev_server_commands_are_refused(command: str) -> None:
    assert forbidden_command(command) is not None


@pytest.mark.parametrize(
    "command", ["npm install zod --yes", "ls app", "npm run lint", "cat devnotes.md", "npx tsc"]
)
def test_ordinary_commands_are_allowed(command: str) -> None:
    assert forbidden_command(command) is None


def test_bound_keeps_head_and_tail_and_says_what_was_cut() -> None:
    text = "A" * 5000 + "B" * 5000
    out = bound(text, 1000)
    assert out.startswith("A" * 400) and out.endswith("B" * 600)
    assert "[... 9000 characters cut ...]" in out
    assert bound("short", 1000) == "short"


def test_task_summary_extraction() -> None:
    assert extract_task_summary("done\n<task_summary>\n Built it. \n</task_summary>") == "Built it."
    assert extract_task_summary("<task_summary>unclosed summary") == "unclosed summary"
    assert extract_task_summary("<task_summary></task_summary>") is None
    assert extract_task_summary("no summary here") is None
    assert extract_task_summary(None) is None


def test_titles_are_cleaned_or_fall_back() -> None:
    assert clean_title('"Todo Board."\nextra line') == "Todo Board"
    assert clean_title("<b>Kanban</b>") == "Kanban"
    assert clean_title("   ") is None
    assert (
        fallback_title("summary", "build me a habit tracker, please!") == "Build Me A Habit Tracker"
    )
    assert fallback_title(None, "") == "Untitled App"
