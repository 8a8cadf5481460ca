"""A fragment as a zip: the template's app with that version's workspace applied, so that
`npm install && npm run dev` runs it anywhere.

The zip is streamed as it is made: template files are read one at a time and each compressed
member is sent as soon as it is written, so a download never holds the whole archive."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from sandboxes.manifest import template_source
from sandboxes.snapshot import WorkspaceSnapshot

SKIPPED_DIRS = {"node_modules", ".next", ".git"}
BUILD_ONLY = {"template.json", "e2b.toml", "e2b.Dockerfile", "compile_page.sh"}
"""Files that build the sandbox image, not part of the app."""


def template_paths(root: Path) -> list[str]:
    paths = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or SKIPPED_DIRS & set(relative.parts) or str(relative) in BUILD_ONLY:
            continue
        paths.append(relative.as_posix())
    return paths


class _Chunks:
    """A write-only, unseekable file whose bytes are taken away as they are written."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def app_zip_chunks(workspace: WorkspaceSnapshot, folder: str) -> Iterator[bytes]:
    """The zip of the template plus `workspace` (changes and deletions), under `folder/`."""
    root = template_source()
    sources: dict[str, Path | bytes] = {path: root / path for path in template_paths(root)}
    for path in workspace.deleted:
        sources.pop(path, None)
        for name in [name for name in sources if name.startswith(path.rstrip("/") + "/")]:
            del sources[name]
    sources.update(workspace.files)
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for path, source in sorted(sources.items()):
            if SKIPPED_DIRS & set(path.split("/")):
                continue
            data = source.read_bytes() if isinstance(source, Path) else source
            archive.writestr(f"{folder}/{path}", data)
            yield sink.take()
    yield sink.take()  # the central directory


def app_zip(workspace: WorkspaceSnapshot, folder: str) -> bytes:
    """The whole zip at once (tests and small callers)."""
    return b"".join(app_zip_chunks(workspace, folder))
