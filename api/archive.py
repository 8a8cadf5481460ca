"""A fragment as a zip: the template's app with that version's workspace applied, so that
`npm install && npm run dev` runs it anywhere.

The zip is streamed as it is made: each compressed member is sent as soon as it is written,
so a download never holds the whole archive. It holds the same files as the version's git
commit (`repos.tree`), links left out."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator

from repos.tree import SYMLINK, app_entries
from sandboxes.snapshot import WorkspaceSnapshot


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
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for path, entry in app_entries(workspace).items():
            if entry.mode == SYMLINK:
                continue
            archive.writestr(f"{folder}/{path}", entry.data)
            yield sink.take()
    yield sink.take()  # the central directory


def app_zip(workspace: WorkspaceSnapshot, folder: str) -> bytes:
    """The whole zip at once (tests and small callers)."""
    return b"".join(app_zip_chunks(workspace, folder))
