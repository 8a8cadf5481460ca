"""How long does it take to turn a project's versions into git commits, and to clone them?

Builds a repository of N versions the way `repos.history` does (the template plus a workspace
that changes a few files per version, one `git fast-import` run), rebuilds it from scratch to
check the hashes match, appends one version incrementally, and clones it through
`git upload-pack` (what a smart-HTTP clone runs on the server). Prints seconds and sizes.

    .venv/bin/python benchmarks/git_bench.py [--versions 100]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from repos.gitcmd import git  # noqa: E402
from repos.history import commit_stream  # noqa: E402
from repos.tree import app_entries  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from sandboxes.snapshot import WorkspaceSnapshot  # noqa: E402
from storage.versions import VersionRow  # noqa: E402


def versions(count: int) -> list[tuple[VersionRow, WorkspaceSnapshot]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    files: dict[str, bytes] = {}
    for index in range(count):
        files[f"app/page{index % 7}.tsx"] = f"export const v = {index};\n".encode() * 40
        files[f"components/c{index}.tsx"] = f"export const C{index} = () => null;\n".encode()
        row = VersionRow(
            message_id=uuid.uuid4(),
            created_at=start + timedelta(minutes=index),
            summary=f"Version {index}: changed page {index % 7}.",
            prompt=f"Change page {index % 7}",
            fragment_id=uuid.uuid4(),
        )
        made.append((row, WorkspaceSnapshot(files=dict(files))))
    return made


async def build(path: Path, rows, settings: Settings, parent: str | None = None) -> float:
    started = time.perf_counter()
    if not path.exists():
        await git(["init", "--quiet", "--bare", str(path)])
    stream = [
        commit_stream(settings, row, app_entries(space), mark=i, parent=parent if i == 1 else None)
        for i, (row, space) in enumerate(rows, start=1)
    ]
    await git(["fast-import", "--quiet", "--done"], cwd=path, input=b"".join(stream) + b"done\n")
    return time.perf_counter() - started


async def head(path: Path) -> str:
    return (await git(["rev-parse", "main"], cwd=path)).stdout.decode().strip()


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=100)
    args = parser.parse_args()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    rows = versions(args.versions + 1)
    with tempfile.TemporaryDirectory() as temporary:
        base = Path(temporary)
        first = await build(base / "a.git", rows[:-1], settings)
        again = await build(base / "b.git", rows[:-1], settings)
        same = await head(base / "a.git") == await head(base / "b.git")
        one = await build(base / "a.git", rows[-1:], settings, parent=await head(base / "a.git"))
        started = time.perf_counter()
        await git(
            ["clone", "--quiet", "--no-local", str(base / "a.git"), str(base / "clone")],
            env={"GIT_PROTOCOL_FROM_USER": "1"},
        )
        clone = time.perf_counter() - started
        print(f"versions:                 {args.versions}")
        print(
            f"build from scratch:       {first:.2f} s ({first / args.versions * 1000:.1f} ms each)"
        )
        print(f"rebuild, same hashes:     {again:.2f} s, {'yes' if same else 'NO'}")
        print(f"append one version:       {one * 1000:.0f} ms")
        print(f"clone (upload-pack):      {clone:.2f} s")
        print(f"repository on disk:       {size(base / 'a.git') / 1024:.0f} KB")
        shutil.rmtree(base / "clone")


if __name__ == "__main__":
    asyncio.run(main())
