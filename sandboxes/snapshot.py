"""A workspace snapshot: everything a project changed relative to its template.

A snapshot holds the files added or changed under /home/user (bytes, with their mode), the
symlinks made there, and the template paths that were deleted. Dependencies (`node_modules`),
build output (`.next`) and tool caches stay out: restoring runs `npm install` instead when the
package files differ from the template's. Stored as one gzip'd tar (deletions in a manifest
member), so a snapshot is a single value for PostgreSQL.

How changes are found depends on the backend. The local backend reads the overlay's upper layer,
which is exactly the set of changes. Any other backend (E2B) compares the workspace's file hashes
with the template's (`diff_against_index`), which is what `Sandbox.snapshot` does by default.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".qai-snapshot.json"
"""The archive member listing deletions and skipped files (never a workspace path)."""

EXCLUDED_NAMES = frozenset({"node_modules", ".next", "tsconfig.tsbuildinfo"})
"""Excluded at any depth: dependencies and build output, rebuilt rather than stored."""
EXCLUDED_TOP = frozenset({".npm", ".cache", ".config", ".local", ".bash_history"})
"""Excluded at the top of /home/user: caches and state of tools, not the project."""
PACKAGE_FILES = ("package.json", "package-lock.json")
MAX_FILE_BYTES = 5 * 1024 * 1024
"""Larger files are listed as skipped rather than stored in every snapshot."""
MAX_SNAPSHOT_BYTES = 50_000_000
"""The default total of a snapshot's files (QAI_SNAPSHOT_MAX_BYTES)."""
SOURCE_SUFFIXES = (
    ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".css", ".scss", ".json", ".md", ".mdx",
    ".html", ".svg", ".txt", ".yaml", ".yml", ".env", ".sh", ".sql", ".prisma", ".toml",
)  # fmt: skip


def keep_rank(path: str, size: int) -> tuple[int, int, str]:
    """The order a snapshot over its total cap keeps files in (first kept first):
    1. the package files (restoring needs them to install the right dependencies);
    2. source and text files (what the user and the model wrote), smallest first;
    3. everything else (images, fonts, data), smallest first.
    Smallest first keeps the most files; a file that does not fit is passed over, and a later,
    smaller one may still fit."""
    if path in PACKAGE_FILES:
        return 0, size, path
    if path.endswith(SOURCE_SUFFIXES) or "." not in path.rsplit("/", 1)[-1]:
        return 1, size, path
    return 2, size, path


def fit(sizes: Mapping[str, int], budget: int) -> tuple[list[str], list[str]]:
    """(kept, left out) of the files with `sizes`, in keep order, within `budget` bytes."""
    kept: list[str] = []
    left_out: list[str] = []
    for path in sorted(sizes, key=lambda p: keep_rank(p, sizes[p])):
        if sizes[path] <= budget:
            kept.append(path)
            budget -= sizes[path]
        else:
            left_out.append(path)
    return kept, sorted(left_out)


def excluded(relative: str) -> bool:
    """True for paths the snapshot never holds (dependencies, build output, caches)."""
    parts = relative.split("/")
    return parts[0] in EXCLUDED_TOP or any(part in EXCLUDED_NAMES for part in parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class WorkspaceSnapshot:
    """What a project changed relative to its template, in paths relative to /home/user."""

    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files over MAX_FILE_BYTES, named so nobody is misled into thinking they were kept."""
    elsewhere: dict[str, str] = field(default_factory=dict)
    """Files kept out of the archive because their store holds the bytes (path -> sha256):
    a message's images, stored once, which every later snapshot of the project would repeat.
    The store puts them back into `files` when it loads the snapshot."""
    over_cap: list[str] = field(default_factory=list)
    """Files left out because the snapshot reached its total cap (see `keep_rank`)."""

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def cap_notice(self, max_bytes: int) -> str | None:
        """What the model is told when the workspace outgrew the snapshot cap, else None."""
        if not self.over_cap:
            return None
        shown = ", ".join(self.over_cap[:10]) + (" ..." if len(self.over_cap) > 10 else "")
        return (
            f"Warning: the workspace's files are larger than the {max_bytes / 1e6:g} MB a saved "
            f"version may hold, so {len(self.over_cap)} file(s) were NOT saved: {shown}. They "
            "will be missing when this version is restored or its sandbox is replaced. Remove "
            "large generated or binary files from /home/user, or make them smaller."
        )

    def needs_install(self) -> bool:
        """True when the dependencies differ from the template's (`npm install` on restore)."""
        return any(name in self.files or name in self.deleted for name in PACKAGE_FILES)

    def source_files(self) -> dict[str, str]:
        """The text files a user reads: every added or changed file that is valid UTF-8."""
        texts = {}
        for path, data in sorted(self.files.items()):
            if b"\0" in data:
                continue
            try:
                texts[path] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
        return texts

    def to_archive(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
            listed = {"deleted": self.deleted, "skipped": self.skipped, "over_cap": self.over_cap}
            if self.elsewhere:
                listed["elsewhere"] = self.elsewhere
            manifest = json.dumps(listed).encode()
            _add_file(archive, MANIFEST, manifest, 0o644)
            for path in sorted(self.files):
                _add_file(archive, path, self.files[path], self.modes.get(path, 0o644))
            for path in sorted(self.symlinks):
                info = tarfile.TarInfo(path)
                info.type = tarfile.SYMTYPE
                info.linkname = self.symlinks[path]
                archive.addfile(info)
        return buffer.getvalue()

    @classmethod
    def from_archive(cls, data: bytes) -> WorkspaceSnapshot:
        snapshot = cls()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                if member.name == MANIFEST:
                    manifest = json.loads(_read(archive, member))
                    snapshot.deleted = list(manifest["deleted"])
                    snapshot.elsewhere = dict(manifest.get("elsewhere", {}))
                    snapshot.skipped = list(manifest["skipped"])
                    snapshot.over_cap = list(manifest.get("over_cap", []))
                elif member.issym():
                    snapshot.symlinks[member.name] = member.linkname
                elif member.isfile():
                    snapshot.files[member.name] = _read(archive, member)
                    snapshot.modes[member.name] = member.mode
        return snapshot

    def restore_script(self) -> str | None:
        """The shell commands that apply deletions, symlinks and modes, or None if none are."""
        lines = [f"rm -rf -- {shlex.quote(path)}" for path in self.deleted]
        for path, target in sorted(self.symlinks.items()):
            parent = str(Path(path).parent)
            if parent != ".":
                lines.append(f"mkdir -p -- {shlex.quote(parent)}")
            lines.append(f"rm -rf -- {shlex.quote(path)}")
            lines.append(f"ln -s -- {shlex.quote(target)} {shlex.quote(path)}")
        for path, mode in sorted(self.modes.items()):
            if mode & 0o777 != 0o644:
                lines.append(f"chmod {mode & 0o777:o} -- {shlex.quote(path)}")
        return "\n".join(lines) if lines else None


def _add_file(archive: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode & 0o777
    archive.addfile(info, io.BytesIO(data))


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    return handle.read() if handle else b""


def template_index(directory: Path) -> dict[str, str]:
    """sha256 of every template file a snapshot could hold, by path relative to the template.

    Symlinks map to `symlink:<target>`, as `changed_paths` compares them.
    """
    index: dict[str, str] = {}
    for root, dirs, names in os.walk(directory):
        base = Path(root).relative_to(directory)
        dirs[:] = [d for d in dirs if not excluded((base / d).as_posix())]
        for name in names + [d for d in dirs if (Path(root) / d).is_symlink()]:
            path = Path(root) / name
            relative = (base / name).as_posix()
            if excluded(relative) or relative.startswith(".qai-"):
                continue
            if path.is_symlink():
                index[relative] = "symlink:" + os.readlink(path)
            elif path.is_file():
                index[relative] = sha256(path.read_bytes())
    return index


def _prune() -> str:
    names = " -o ".join(f"-name {shlex.quote(name)}" for name in sorted(EXCLUDED_NAMES))
    tops = " -o ".join(f"-path ./{shlex.quote(name)}" for name in sorted(EXCLUDED_TOP))
    return f"\\( {names} -o {tops} \\) -prune"


LIST_COMMAND = (
    f"cd /home/user && find . -mindepth 1 {_prune()} -o \\( -type f -o -type l \\) "
    "-printf '%y %m %s %P\\0%l\\0'"
)
"""Lists the workspace's files and symlinks (caches pruned) as NUL-separated fields:
`<f|l> <octal mode> <size> <path>`, then the link target (empty for files)."""

HASH_COMMAND = (
    f"cd /home/user && find . -mindepth 1 {_prune()} -o -type f -printf '%P\\0' "
    "| xargs -0 -r sha256sum -z --"
)
"""sha256 of every workspace file, as `<hash>  <path>` NUL-terminated records."""


@dataclass(frozen=True)
class Listed:
    kind: str
    mode: int
    size: int
    target: str


def parse_listing(output: str) -> dict[str, Listed]:
    fields = output.split("\0")
    entries: dict[str, Listed] = {}
    for head, target in zip(fields[0::2], fields[1::2], strict=False):
        if not head:
            continue
        kind, mode, size, path = head.split(" ", 3)
        entries[path] = Listed(kind, int(mode, 8), int(size), target)
    return entries


def parse_hashes(output: str) -> dict[str, str]:
    hashes = {}
    for record in output.split("\0"):
        if record:
            digest, path = record.split("  ", 1)
            hashes[path] = digest
    return hashes


def changed_paths(
    index: Mapping[str, str], listing: Mapping[str, Listed], hashes: Mapping[str, str]
) -> tuple[list[str], dict[str, str], list[str]]:
    """Files to read, symlinks to keep and deletions, from a listing compared to the template."""
    files = sorted(
        path
        for path, entry in listing.items()
        if entry.kind == "f" and index.get(path) != hashes.get(path)
    )
    symlinks = {
        path: entry.target
        for path, entry in listing.items()
        if entry.kind == "l" and index.get(path) != "symlink:" + entry.target
    }
    deleted = sorted(path for path in index if path not in listing)
    return files, symlinks, deleted
