"""Running Debian's git with nothing of the host's: no user or system config, no hooks, no
prompts, an empty HOME. Commits made this way depend only on their input, so they are
reproducible, and a token handed in the environment reaches git and nothing else."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GIT = shutil.which("git") or "/usr/bin/git"
_home: list[str] = []


class GitError(Exception):
    """git failed; `stderr` is what it said (the caller decides what a user may see)."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str, stdout: str = "") -> None:
        super().__init__(f"git {args[0] if args else ''} exited with {returncode}")
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        """What it printed (`push --porcelain` reports rejections there)."""


@dataclass(frozen=True)
class GitOutput:
    stdout: bytes
    stderr: str


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment in which git reads no config but what `extra` gives it."""
    if not _home:  # private to this process, so nobody can plant a config in it
        _home.append(tempfile.mkdtemp(prefix="qai-git-home-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": _home[0],
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "GIT_PROTOCOL_FROM_USER": "0",
    }
    env.update(extra or {})
    return env


def config_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """`git -c` settings passed through the environment (GIT_CONFIG_COUNT), so that values
    such as an auth header never appear on a command line that `ps` shows."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


BASE_CONFIG = [
    ("core.hooksPath", os.devnull),
    ("init.defaultBranch", "main"),
    ("gc.auto", "0"),
    ("core.autocrlf", "false"),
]


async def git(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,  # noqa: ASYNC109  (the kill on timeout is git's own)
    check: bool = True,
) -> GitOutput:
    """Run git; raises GitError on a non-zero exit (with `check`) or after `timeout` seconds."""
    config = list(BASE_CONFIG)
    extra = dict(env or {})
    if "GIT_CONFIG_COUNT" in extra:  # the caller's settings come after the base ones
        count = int(extra.pop("GIT_CONFIG_COUNT"))
        for index in range(count):
            config.append(
                (extra.pop(f"GIT_CONFIG_KEY_{index}"), extra.pop(f"GIT_CONFIG_VALUE_{index}"))
            )
    process = await asyncio.create_subprocess_exec(
        GIT,
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env({**extra, **config_env(config)}),
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate(input)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise GitError(args, -9, f"git took longer than {timeout:.0f} s") from None
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    text = stderr.decode("utf-8", "replace")
    if check and process.returncode != 0:
        raise GitError(args, process.returncode or 1, text, stdout.decode("utf-8", "replace"))
    return GitOutput(stdout, text)
