"""The app a version stands for: the template's files with the version's workspace applied.

This is what the zip download holds and what a git commit holds, so both come from here.
Dependencies (`node_modules`), build output (`.next`) and the template's build recipe are left
out: `npm install && npm run dev` rebuilds the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandboxes.manifest import template_source
from sandboxes.snapshot import WorkspaceSnapshot

SKIPPED_DIRS = {"node_modules", ".next", ".git"}
BUILD_ONLY = {"template.json", "e2b.toml", "e2b.Dockerfile", "compile_page.sh"}
"""Files that build the sandbox image, not part of the app."""

REGULAR, EXECUTABLE, SYMLINK = "100644", "100755", "120000"


@dataclass(frozen=True)
class Entry:
    mode: str
    """A git file mode: REGULAR, EXECUTABLE or SYMLINK (then `data` is the link target)."""
    data: bytes


def skipped(path: str) -> bool:
    return bool(SKIPPED_DIRS & set(path.split("/")))


def template_files(root: Path) -> dict[str, bytes]:
    return {path: entry.data for path, entry in template_entries(root).items()}


def template_entries(root: Path) -> dict[str, Entry]:
    entries = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() and not path.is_symlink():
            continue
        if SKIPPED_DIRS & set(relative.parts) or str(relative) in BUILD_ONLY:
            continue
        if path.is_symlink():
            entries[relative.as_posix()] = Entry(SYMLINK, os.readlink(path).encode())
            continue
        mode = EXECUTABLE if path.stat().st_mode & 0o111 else REGULAR
        entries[relative.as_posix()] = Entry(mode, path.read_bytes())
    return entries


def app_entries(workspace: WorkspaceSnapshot, template: Path | None = None) -> dict[str, Entry]:
    """Every file of the app: the template plus `workspace` (changes, links and deletions)."""
    entries = template_entries(template or template_source())
    for path in workspace.deleted:
        prefix = path.rstrip("/") + "/"
        for name in [name for name in entries if name == path or name.startswith(prefix)]:
            del entries[name]
    for path, data in workspace.files.items():
        mode = EXECUTABLE if workspace.modes.get(path, 0o644) & 0o111 else REGULAR
        entries[path] = Entry(mode, data)
    for path, target in workspace.symlinks.items():
        entries[path] = Entry(SYMLINK, target.encode())
    return {path: entries[path] for path in sorted(entries) if not skipped(path)}
