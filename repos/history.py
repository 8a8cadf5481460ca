"""A project's history as a git repository: one commit per version, built by the server.

Each RESULT reply with a fragment (a run's result, a restore, an import) is one commit on
`main`, holding exactly what the zip download holds (`repos.tree`). The subject is the summary,
the body the user's message; author and committer are QAI_GIT_AUTHOR, dated the reply's time.

The repository works from a cache under `<QAI_DATA_DIR>/git/`, extended with the versions made
since it was last read. After each extension it is stored in PostgreSQL as a bundle
(`storage.repositories`), so a lost cache comes back with the very same commits, even after the
template changed. Without a bundle (or with one holding a version that is gone) it is rebuilt
from the workspace snapshots. Commits are made with `git fast-import` from fixed input only
(dates, identity, file modes; no user config or hooks), so a rebuild gives the same hashes.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from repos.gitcmd import GitError, git
from repos.tree import Entry, app_entries
from runtime.settings import Settings
from storage import repositories, versions
from storage.db import Database
from storage.errors import ProjectNotFoundError
from storage.queries import get_project
from storage.versions import VersionRow

log = logging.getLogger(__name__)

BRANCH = "main"
STATE = "qai-versions.json"
"""In the bare repository: the versions it holds, in order, with their commits."""
SUBJECT_CHARS = 200


@dataclass(frozen=True)
class Repository:
    path: Path
    head: str | None
    """The commit of the latest version; None while the project has no version."""
    versions: int


def repositories_dir(settings: Settings) -> Path:
    return settings.data_dir / "git"


def repository_path(settings: Settings, project_id: uuid.UUID) -> Path:
    return repositories_dir(settings) / f"{project_id}.git"


def remove_repository(settings: Settings, project_id: uuid.UUID) -> None:
    """Forget a deleted project's repository (its cache; the snapshots went with the rows)."""
    path = repository_path(settings, project_id)
    shutil.rmtree(path, ignore_errors=True)
    path.with_suffix(".lock").unlink(missing_ok=True)


def author_line(settings: Settings, when: int) -> str:
    return f"{settings.qai_git_author} {when} +0000"


def commit_message(version: VersionRow) -> str:
    """Subject: the summary's first line; body: the user's message, then the rest."""
    lines = [line.strip() for line in version.summary.strip().splitlines()]
    subject = next((line for line in lines if line), "") or "Version"
    if len(subject) > SUBJECT_CHARS:
        subject = subject[: SUBJECT_CHARS - 1].rstrip() + "…"
    rest = "\n".join(lines[lines.index(subject) + 1 :]).strip() if subject in lines else ""
    parts = [subject]
    if version.prompt:
        parts.append(version.prompt.strip())
    if rest:
        parts.append(rest)
    parts.append(f"Qai-Version: {version.message_id}")
    return "\n\n".join(parts) + "\n"


def _quote(path: str) -> bytes:
    """A fast-import path, C-quoted so that any name (spaces, quotes, newlines) survives."""
    out = ['"']
    for char in path:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out).encode()


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def commit_stream(
    settings: Settings,
    version: VersionRow,
    entries: dict[str, Entry],
    *,
    mark: int,
    parent: str | None,
) -> bytes:
    """One fast-import commit replacing the whole tree with `entries`."""
    when = int(version.created_at.timestamp())
    chunks = [
        f"commit refs/heads/{BRANCH}\nmark :{mark}\n".encode(),
        f"author {author_line(settings, when)}\n".encode(),
        f"committer {author_line(settings, when)}\n".encode(),
        _data(commit_message(version).encode()),
    ]
    if parent:
        chunks.append(f"from {parent}\n".encode())
    chunks.append(b"deleteall\n")
    for path, entry in entries.items():
        chunks.append(b"M " + entry.mode.encode() + b" inline " + _quote(path) + b"\n")
        chunks.append(_data(entry.data))
    chunks.append(b"\n")
    return b"".join(chunks)


def _read_state(path: Path) -> list[tuple[str, str]] | None:
    """The versions the repository holds; None when it must be rebuilt (lost or damaged)."""
    if not (path / "HEAD").exists():
        return None
    try:
        return [(row[0], row[1]) for row in json.loads((path / STATE).read_text())]
    except (OSError, ValueError, IndexError, TypeError):
        return None


@asynccontextmanager
async def _locked(lock_path: Path) -> AsyncIterator[None]:
    """One builder per repository at a time, across API processes and the CLI."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:  # noqa: ASYNC230  (a local empty file)
        await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


async def sync_repository(db: Database, settings: Settings, project_id: uuid.UUID) -> Repository:
    """The project's repository with every version saved so far as a commit.

    Raises ProjectNotFoundError for an unknown project.
    """
    path = repository_path(settings, project_id)
    async with db.session() as session:
        if await get_project(session, project_id) is None:
            await asyncio.to_thread(remove_repository, settings, project_id)
            raise ProjectNotFoundError(project_id)
        rows = await versions.project_versions(session, project_id)
    async with _locked(path.with_suffix(".lock")):
        state = _read_state(path)
        ids = [str(row.message_id) for row in rows]
        if state is None:  # lost or damaged: back from its bundle in PostgreSQL, if it fits
            state = await _restore(db, path, project_id, ids)
        if state is None or [version for version, _ in state] != ids[: len(state)]:
            # Holding a version that is gone, or never stored: rebuilt from the snapshots.
            await _empty(path)
            state = []
        new = rows[len(state) :]
        if new:
            state = await _append(db, settings, path, new, state)
            await _store(db, path, project_id, state)
        return Repository(path=path, head=state[-1][1] if state else None, versions=len(state))


async def _empty(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    await git(["init", "--quiet", "--bare", str(path)])
    (path / STATE).write_text("[]")


async def _restore(
    db: Database, path: Path, project_id: uuid.UUID, ids: list[str]
) -> list[tuple[str, str]] | None:
    """The repository from its stored bundle; None when there is none or it no longer fits."""
    async with db.session() as session:
        row = await repositories.get(session, project_id)
    if row is None:
        return None
    state = [(str(version), str(commit)) for version, commit in row.versions]
    if not state or [version for version, _ in state] != ids[: len(state)]:
        return None
    await _empty(path)
    bundle = path / "qai-restore.bundle"
    bundle.write_bytes(row.bundle)
    try:
        await git(["bundle", "unbundle", str(bundle)], cwd=path)
        await git(["update-ref", f"refs/heads/{BRANCH}", state[-1][1]], cwd=path)
    except GitError as error:
        log.warning("the stored bundle of %s could not be restored: %s", project_id, error)
        return None
    finally:
        bundle.unlink(missing_ok=True)
    _write_state(path, state)
    return state


async def _store(
    db: Database, path: Path, project_id: uuid.UUID, state: list[tuple[str, str]]
) -> None:
    """Keep the history durably: one bundle of `main`, replacing the last."""
    bundle = path / "qai-store.bundle"
    try:
        await git(["bundle", "create", "--quiet", str(bundle), BRANCH], cwd=path)
        data = bundle.read_bytes()
    finally:
        bundle.unlink(missing_ok=True)
    try:
        async with db.session() as session:
            await repositories.save(session, project_id, data, [list(pair) for pair in state])
            await session.commit()
    except IntegrityError:  # the project was deleted meanwhile: nothing to keep
        pass


def _write_state(path: Path, state: list[tuple[str, str]]) -> None:
    temporary = path / f"{STATE}.new"
    temporary.write_text(json.dumps(state))
    temporary.replace(path / STATE)


async def _append(
    db: Database,
    settings: Settings,
    path: Path,
    rows: Sequence[VersionRow],
    state: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Commit `rows` after the state's last commit, one fast-import run for all of them."""
    stream = []
    parent = state[-1][1] if state else None
    included: list[VersionRow] = []
    for row in rows:
        async with db.session() as session:
            fragment = await versions.get_fragment(session, row.fragment_id)
            if fragment is None:  # deleted meanwhile: the next read rebuilds without it
                break
            workspace = await versions.fragment_workspace(session, fragment)
        entries = await asyncio.to_thread(app_entries, workspace)
        included.append(row)
        mark = len(included)
        stream.append(
            commit_stream(settings, row, entries, mark=mark, parent=parent if mark == 1 else None)
        )
    if not included:
        return state
    marks = path / "qai-marks"
    await git(
        ["fast-import", "--quiet", "--done", f"--export-marks={marks}"],
        cwd=path,
        input=b"".join(stream) + b"done\n",
        timeout=300,
    )
    by_mark = dict(
        line.split(" ", 1) for line in marks.read_text().split("\n") if line.startswith(":")
    )
    marks.unlink()
    state = state + [
        (str(row.message_id), by_mark[f":{mark}"].strip())
        for mark, row in enumerate(included, start=1)
    ]
    _write_state(path, state)
    return state
