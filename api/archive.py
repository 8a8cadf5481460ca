"""A fragment as a zip: the template's app with that version's workspace applied, so that
`npm install && npm run dev` runs it anywhere."""

from __future__ import annotations

import io
import zipfile

from repos.tree import SYMLINK, app_entries
from sandboxes.snapshot import WorkspaceSnapshot


def app_zip(workspace: WorkspaceSnapshot, folder: str) -> bytes:
    """The zip of the template plus `workspace` (changes and deletions), under `folder/`:
    the same files as the version's git commit (`repos.tree`), links left out."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, entry in app_entries(workspace).items():
            if entry.mode == SYMLINK:
                continue
            archive.writestr(f"{folder}/{path}", entry.data)
    return buffer.getvalue()
