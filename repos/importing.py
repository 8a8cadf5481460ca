"""Starting a project from a git repository: its files become the project's first version.

The repository is fetched (one commit, `--depth 1`) into a bare repository in a temporary
directory and read with `ls-tree`/`cat-file`: nothing is checked out, so no file of it lands on
this host's filesystem and no link in it is followed. It must be a Next.js app (a root
`package.json` depending on `next`) of at most MAX_FILES files and MAX_BYTES bytes without
`node_modules`, with no submodule and no link pointing outside it. Anything refused leaves
nothing behind: no row is written before the repository passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from repos.gitcmd import GitError, git
from repos.remotes import RemoteRefused, RemoteUnreachable, check_remote, git_failure
from repos.tree import BUILD_ONLY, EXECUTABLE, REGULAR, template_entries
from runtime.preview_urls import preview_url
from runtime.settings import Settings
from sandboxes.manifest import template_source
from sandboxes.snapshot import MAX_FILE_BYTES, WorkspaceSnapshot, excluded
from storage import versions
from storage.db import Database
from storage.models import Message

MAX_FILES = 5_000
MAX_BYTES = 50 * 1024 * 1024
FETCH_TIMEOUT = 300.0
FETCH_DISK_FACTOR = 4
"""The fetch is stopped once its pack passes FETCH_DISK_FACTOR × MAX_BYTES on disk."""
REF = re.compile(r"(?!-)[A-Za-z0-9._/+-]{1,200}")


class ImportRefused(Exception):
    """The repository cannot become a project; `status` and the message are for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FetchedRepository:
    url: str
    commit: str
    workspace: WorkspaceSnapshot
    files: int
    size: int


def repository_name(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    words = re.findall(r"[a-z0-9]+", tail.lower())
    return "-".join(words)[:60] or "imported"


def _is_next_app(data: bytes | None) -> bool:
    if data is None:
        return False
    try:
        manifest = json.loads(data)
    except ValueError:
        return False
    if not isinstance(manifest, dict):
        return False
    return any(
        isinstance(manifest.get(group), dict) and "next" in manifest[group]
        for group in ("dependencies", "devDependencies")
    )


def _inside(path: str, target: str) -> bool:
    if target.startswith("/") or "\0" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return resolved != ".." and not resolved.startswith("../") and resolved != "."


async def _fetch(settings: Settings, repo: Path, url: str, ref: str, token: str | None) -> str:
    """Fetch `ref` into the bare `repo`, stopped if it grows past the size limit."""
    try:
        remote = await check_remote(settings, url)
    except RemoteRefused as error:
        raise ImportRefused(422, str(error)) from None
    except RemoteUnreachable as error:
        raise ImportRefused(502, f"the repository is unreachable: {error}") from None
    fetch = asyncio.create_task(
        git(
            ["fetch", "--quiet", "--depth=1", "--no-tags", remote.url, ref],
            cwd=repo,
            env=remote.git_env(token),
            timeout=FETCH_TIMEOUT,
        )
    )
    limit = FETCH_DISK_FACTOR * MAX_BYTES
    try:
        while not fetch.done():
            await asyncio.wait({fetch}, timeout=0.25)
            if not fetch.done() and _disk_usage(repo) > limit:
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
                raise ImportRefused(422, _too_large())
        fetch.result()
    except GitError as error:
        status, words = git_failure(error.stderr, token, pushing=False)
        raise ImportRefused(status, words) from None
    finally:
        if not fetch.done():
            fetch.cancel()
    return remote.url


def _disk_usage(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def _too_large() -> str:
    return (
        f"the repository is too large: at most {MAX_FILES:,} files and "
        f"{MAX_BYTES // (1024 * 1024)} MB without node_modules"
    )


async def _read_blobs(repo: Path, ids: list[str]) -> list[bytes]:
    request = "".join(f"{object_id}\n" for object_id in ids).encode()
    output = await git(["cat-file", "--batch"], cwd=repo, input=request)
    data, blobs, at = output.stdout, [], 0
    for _ in ids:
        end = data.index(b"\n", at)
        header = data[at:end].split()
        size = int(header[2])
        blobs.append(data[end + 1 : end + 1 + size])
        at = end + 1 + size + 1
    return blobs


async def fetch_repository(
    settings: Settings, url: str, ref: str | None, token: str | None
) -> FetchedRepository:
    """The repository's files at `ref` (default: its HEAD) as a workspace over the template.

    Raises ImportRefused with the reason for anything that may not be imported.
    """
    wanted = (ref or "HEAD").strip()
    if not REF.fullmatch(wanted) or ".." in wanted:
        raise ImportRefused(422, f"{ref!r} is not a branch, tag or commit name")
    with tempfile.TemporaryDirectory(prefix="qai-import-") as temporary:
        repo = Path(temporary) / "repo.git"
        await git(["init", "--quiet", "--bare", str(repo)])
        clean_url = await _fetch(settings, repo, url, wanted, token)
        commit = (await git(["rev-parse", "FETCH_HEAD^{commit}"], cwd=repo)).stdout.decode().strip()
        listing = await git(["ls-tree", "-r", "-z", "--long", commit], cwd=repo)
        files: list[tuple[str, str, str]] = []
        links: list[tuple[str, str]] = []
        total = 0
        for raw in listing.stdout.split(b"\0"):
            if not raw:
                continue
            try:
                record = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportRefused(
                    422, "the repository has a file name that is not UTF-8"
                ) from None
            info, _, path = record.partition("\t")
            mode, kind, object_id, size = info.split()
            if excluded(path):
                continue
            if mode == "160000" or kind == "commit":
                raise ImportRefused(
                    422, f"the repository has a submodule at {path}; submodules are not imported"
                )
            if mode == "120000":
                links.append((path, object_id))
                continue
            if kind != "blob":
                continue
            if int(size) > MAX_FILE_BYTES:
                raise ImportRefused(
                    422,
                    f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; "
                    "large files are not imported",
                )
            total += int(size)
            files.append((path, mode, object_id))
            if len(files) + len(links) > MAX_FILES or total > MAX_BYTES:
                raise ImportRefused(422, _too_large())
        targets = await _read_blobs(repo, [object_id for _, object_id in links])
        workspace = WorkspaceSnapshot()
        for (path, _), target in zip(links, targets, strict=True):
            text = target.decode("utf-8", "replace")
            if not _inside(path, text):
                raise ImportRefused(
                    422, f"the link {path} points outside the repository ({text}); not imported"
                )
            workspace.symlinks[path] = text
        contents = await _read_blobs(repo, [object_id for _, _, object_id in files])
        for (path, mode, _), data in zip(files, contents, strict=True):
            workspace.files[path] = data
            workspace.modes[path] = 0o755 if mode == "100755" else 0o644
    if not _is_next_app(workspace.files.get("package.json")):
        raise ImportRefused(
            422,
            "the repository is not a Next.js app: its package.json (at the top) must depend "
            "on next",
        )
    present = set(workspace.files) | set(workspace.symlinks)
    template = template_entries(template_source())
    workspace.deleted = sorted(
        path for path in template if path not in present and path not in BUILD_ONLY
    )
    for path, entry in template.items():  # a snapshot holds changes only: `npm install` then
        data = workspace.files.get(path)  # runs exactly when the dependencies differ
        mode = EXECUTABLE if workspace.modes.get(path, 0o644) & 0o111 else REGULAR
        if data is not None and data == entry.data and mode == entry.mode:
            del workspace.files[path]
            workspace.modes.pop(path, None)
    return FetchedRepository(
        url=clean_url, commit=commit, workspace=workspace, files=len(present), size=total
    )


async def save_import(
    db: Database, settings: Settings, fetched: FetchedRepository, project_id: uuid.UUID
) -> Message:
    """The project, with the repository as its first version (a RESULT)."""
    async with db.session() as session:
        return await versions.save_imported_project(
            session,
            project_id=project_id,
            name=repository_name(fetched.url),
            message_id=uuid.uuid4(),
            title=repository_name(fetched.url),
            content=f"Imported {fetched.url} at {fetched.commit}",
            workspace=fetched.workspace,
            sandbox_url=preview_url(settings, project_id),
        )
