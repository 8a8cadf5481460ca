"""Read a local sandbox's changes from its overlay's upper layer, on the host, safely.

The upper layer holds exactly what the sandbox changed: new and modified files (whole, since
overlayfs copies a file up before writing it), whiteouts (character devices 0:0) for deletions,
and opaque directories for directories that were removed and made again. The sandbox user owns
these files, so the walk goes through directory file descriptors with O_NOFOLLOW: a symlink
planted or swapped in mid-walk is recorded as a symlink and never followed on the host.

Two passes keep the worker's memory to the snapshot cap: the walk only stats files, then the
ones that fit the cap (in `keep_rank` order) are read, each opened again component by component
with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from sandboxes.snapshot import (
    MAX_FILE_BYTES,
    MAX_SNAPSHOT_BYTES,
    WorkspaceSnapshot,
    excluded,
    fit,
    sha256,
)

OPAQUE_XATTR = "trusted.overlay.opaque"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_OVER = -1


def read_upper(
    upper: Path, index: Mapping[str, str], max_bytes: int = MAX_SNAPSHOT_BYTES
) -> WorkspaceSnapshot:
    """The snapshot of a workspace whose overlay upper layer is `upper`, against `index`:
    its files' total at most `max_bytes` (the rest named in `over_cap`)."""
    snapshot = WorkspaceSnapshot()
    deleted: set[str] = set()
    sizes: dict[str, int] = {}
    root = os.open(upper, _DIR_FLAGS)
    try:
        _walk(root, "", index, snapshot, deleted, sizes)
        budget = max_bytes
        kept, snapshot.over_cap = fit(sizes, max_bytes)
        for path in kept:
            taken = _read_file(root, path, index, snapshot, budget)
            if taken == _OVER:  # grew since the walk: the cap holds anyway
                snapshot.over_cap.append(path)
            elif taken is not None:
                budget -= taken
        snapshot.over_cap.sort()
    finally:
        os.close(root)
    snapshot.files = dict(sorted(snapshot.files.items()))
    snapshot.deleted = sorted(deleted)
    return snapshot


def _under(index: Mapping[str, str], prefix: str) -> set[str]:
    return {path for path in index if path == prefix or path.startswith(prefix + "/")}


def _walk(
    dir_fd: int,
    prefix: str,
    index: Mapping[str, str],
    snapshot: WorkspaceSnapshot,
    deleted: set[str],
    sizes: dict[str, int],
) -> None:
    present: set[str] = set()
    with os.scandir(dir_fd) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        relative = f"{prefix}{name}"
        if excluded(relative):
            continue
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:  # removed while we walked
            continue
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            deleted |= _under(index, relative)
            continue
        present.add(relative)
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(name, dir_fd=dir_fd)
            if index.get(relative) != "symlink:" + target:
                snapshot.symlinks[relative] = target
        elif stat.S_ISDIR(info.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                if _opaque(child):  # removed and made again: nothing of the template shows
                    deleted |= _under(index, relative) - {relative}
                _walk(child, relative + "/", index, snapshot, deleted, sizes)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            if info.st_size > MAX_FILE_BYTES:
                snapshot.skipped.append(relative)
            else:
                sizes[relative] = info.st_size
    # An opaque directory's template files were all marked deleted above; take back the ones
    # that were made again.
    deleted -= present


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _read_file(
    root: int,
    relative: str,
    index: Mapping[str, str],
    snapshot: WorkspaceSnapshot,
    budget: int,
) -> int | None:
    """Read one file into the snapshot (unless it is the template's); the bytes it takes of the
    budget, or None when it is gone, grew past a limit, or is reached through a symlink."""
    *folders, name = relative.split("/")
    fds: list[int] = []
    try:
        dir_fd = root
        for folder in folders:
            dir_fd = os.open(folder, _DIR_FLAGS, dir_fd=dir_fd)
            fds.append(dir_fd)
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:  # removed, or swapped for a link, since the walk
        return None
    finally:
        for opened in fds:
            os.close(opened)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return None
        data = handle.read(min(MAX_FILE_BYTES, budget) + 1)
    if len(data) > MAX_FILE_BYTES:
        snapshot.skipped.append(relative)
        return None
    if len(data) > budget:
        return _OVER
    if index.get(relative) == sha256(data):  # a copy-up by chmod or touch is no change
        return 0
    snapshot.files[relative] = data
    snapshot.modes[relative] = stat.S_IMODE(info.st_mode)
    return len(data)
