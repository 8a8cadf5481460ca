"""Pushing a project's history to the user's own remote (GitHub, GitLab, a self-hosted git).

It runs in the API (or CLI) process, not as an activity: it needs no sandbox, only the
repository built from PostgreSQL, and the token would otherwise pass through Temporal's history.
Here the token lives in one git process's environment for one push and is then gone.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from repos.gitcmd import GitError, git
from repos.history import sync_repository
from repos.remotes import RemoteRefused, RemoteUnreachable, check_remote, git_failure
from runtime.settings import Settings
from storage.db import Database

PUSH_TIMEOUT = 300.0
BRANCH_NAME = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]{1,200}(?<![./])")


class PushFailed(Exception):
    """The push did not happen; `status` and the message are for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Pushed:
    remote_url: str
    branch: str
    commit: str
    versions: int
    forced: bool
    up_to_date: bool


def check_branch(branch: str) -> str:
    name = branch.strip().removeprefix("refs/heads/")
    if not BRANCH_NAME.fullmatch(name) or name.endswith(".lock"):
        raise PushFailed(422, f"{branch!r} is not a valid branch name")
    return name


async def push_project(
    db: Database,
    settings: Settings,
    project_id: uuid.UUID,
    *,
    remote_url: str,
    branch: str = "main",
    token: str | None = None,
    force: bool = False,
) -> Pushed:
    """Push the project's versions to `branch` of `remote_url`. Raises PushFailed,
    or ProjectNotFoundError."""
    name = check_branch(branch)
    try:
        remote = await check_remote(settings, remote_url)
    except RemoteRefused as error:
        raise PushFailed(422, str(error)) from None
    except RemoteUnreachable as error:
        raise PushFailed(502, f"the remote is unreachable: {error}") from None
    repository = await sync_repository(db, settings, project_id)
    if repository.head is None:
        raise PushFailed(409, "the project has no version yet; push it once its first run is done")
    refspec = f"{'+' if force else ''}{repository.head}:refs/heads/{name}"
    try:
        output = await git(
            ["push", "--porcelain", "--no-verify", remote.url, refspec],
            cwd=repository.path,
            env=remote.git_env(token),
            timeout=PUSH_TIMEOUT,
        )
    except GitError as error:
        status, words = git_failure(error.stdout + error.stderr, token, pushing=True)
        raise PushFailed(status, words) from None
    up_to_date = any(line.startswith("=\t") for line in output.stdout.decode().splitlines())
    return Pushed(
        remote_url=remote.url,
        branch=name,
        commit=repository.head,
        versions=repository.versions,
        forced=force,
        up_to_date=up_to_date,
    )
