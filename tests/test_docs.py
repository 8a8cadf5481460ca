"""The README and docs/ name only files, modules, make targets and sections that exist, the
README stays short, and no page speaks of a history its reader never saw."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 160

_CODE = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_PATHLIKE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_.-]+)*/?$")


def tracked() -> set[str]:
    """Every tracked file and every directory holding one, relative to the repository."""
    listed = subprocess.run(
        ["git", "-c", "safe.directory=*", "ls-files"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = set(listed)
    for path in listed:
        parts = path.split("/")
        paths.update("/".join(parts[:end]) for end in range(1, len(parts)))
    return paths


def ignored(name: str) -> bool:
    """A path that setup makes and git ignores, such as the web UI's vendored libraries."""
    check = subprocess.run(
        ["git", "-c", "safe.directory=*", "check-ignore", "-q", "--no-index", name], cwd=ROOT
    )
    return check.returncode == 0


def named_paths(text: str) -> set[str]:
    """Words in code spans and code blocks that name a file or a directory of the repository."""
    words = set()
    for span in [*_CODE.findall(text), *_FENCE.findall(text)]:
        words.update(span.split())
    found = set()
    for word in words:
        word = word.strip("(),;:")
        if not _PATHLIKE.match(word) or word.startswith((".venv", ".qai")):
            continue
        last = word.rstrip("/").rsplit("/", 1)[-1]
        if word.endswith("/") or ("/" in word and "." in last) or word.endswith(".py"):
            found.add(word.rstrip("/"))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.fixture(scope="module")
def files() -> set[str]:
    return tracked()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_named_file_exists(page: Path, files: set[str]) -> None:
    missing = []
    for name in sorted(named_paths(page.read_text())):
        exists = name in files or any(path.endswith(f"/{name}") for path in files)
        if not exists and not ignored(name):
            missing.append(name)
    assert missing == [], f"{page.name} names files or directories that do not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_names_a_module_and_a_make_target_that_exist(page: Path) -> None:
    text = page.read_text()
    modules = set(re.findall(r"python -m ([A-Za-z_][\w.]*)", text))
    assert [name for name in sorted(modules) if importlib.util.find_spec(name) is None] == []
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert set(re.findall(r"`make (\w+)`", text)) <= targets


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_reaches_a_page_and_a_section(page: Path) -> None:
    broken = []
    for link in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists() or (anchor and anchor not in anchors(path)):
            broken.append(link)
    assert broken == []


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_speaks_of_history(page: Path) -> None:
    text = page.read_text().lower()
    said = [
        phrase
        for phrase in ("the original", "as before", "previously", "no longer", "used to", "today's")
        if phrase in text
    ]
    assert said == [], "describe what is, not what changed"
