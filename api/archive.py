"""A fragment as a zip: the template's app with that version's workspace applied, so that
`npm install && npm run dev` runs it anywhere."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from sandboxes.manifest import template_source
from sandboxes.snapshot import WorkspaceSnapshot

SKIPPED_DIRS = {"node_modules", ".next", ".git"}
BUILD_ONLY = {"template.json", "e2b.toml", "e2b.Dockerfile", "compile_page.sh"}
"""Files that build the sandbox image, not part of the app."""


def template_files(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or SKIPPED_DIRS & set(relative.parts) or str(relative) in BUILD_ONLY:
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


def app_zip(workspace: WorkspaceSnapshot, folder: str) -> bytes:
    """The zip of the template plus `workspace` (changes and deletions), under `folder/`."""
    files = template_files(template_source())
    for path in workspace.deleted:
        files.pop(path, None)
        for name in [name for name in files if name.startswith(path.rstrip("/") + "/")]:
            del files[name]
    files.update(workspace.files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in sorted(files.items()):
            if SKIPPED_DIRS & set(path.split("/")):
                continue
            archive.writestr(f"{folder}/{path}", data)
    return buffer.getvalue()
