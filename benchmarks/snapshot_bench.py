"""The cost of workspace snapshots: time per snapshot, its size, and restoring it.

    sudo .venv/bin/python benchmarks/snapshot_bench.py --runs 20
    sudo .venv/bin/python benchmarks/snapshot_bench.py --runs 20 --with-install

On a Next.js sandbox holding the demo app (`scripted_llm/scripts/demo.json`'s todo app, written as
the demo writes it, plus a `sed -i` edit and a deleted template file), it times a snapshot the way
each tool call takes it (the local backend's overlay upper layer, then the archive stored in
PostgreSQL), the generic way other backends use (hashing through commands), and restoring the
snapshot onto a new sandbox. `--with-install` also adds an npm package, so the restore runs
`npm install` (it needs the `registry` network). Figures are medians of N runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.settings import SandboxNetwork, Settings
from sandboxes.base import Sandbox, WriteEntry
from sandboxes.local.backend import LocalBackend
from sandboxes.local.templates import built_template
from sandboxes.snapshot import WorkspaceSnapshot

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripted_llm" / "scripts" / "demo.json"


def demo_files() -> dict[str, str]:
    """The files the demo's todo conversation writes, from the script itself."""
    script = json.loads(DEMO.read_text())
    conversations = [c for c in script.get("conversations", []) if c.get("name") == "todo"]
    turns = (conversations[0] if conversations else script["default"])["turns"]
    files: dict[str, str] = {}
    for turn in turns:
        for call in turn.get("tool_calls", []):
            if call["name"] != "createOrUpdateFiles":
                continue
            for entry in call["arguments"]["files"]:
                content = entry["content"]
                if isinstance(content, dict):
                    content = (DEMO.parent / content["$file"]).read_text()
                files[entry["path"]] = content
    return files


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


async def main(runs: int, with_install: bool) -> None:
    network = SandboxNetwork.REGISTRY if with_install else SandboxNetwork.NONE
    data_dir = Path(tempfile.mkdtemp(prefix="qai-snapshot-bench-"))
    settings = Settings(qai_data_dir=data_dir, qai_sandbox_network=network, qai_sandbox_pool_size=0)  # type: ignore[call-arg]
    spec = built_template(Settings(), "nextjs")  # the project's cached template
    backend = LocalBackend(settings, templates={"nextjs": spec})
    index = await backend.template_index("nextjs")
    first = await backend.create("nextjs", timeout=900)
    try:
        await first.files.write_files([WriteEntry(p, c) for p, c in demo_files().items()])
        changes = "sed -i '1i // edited' lib/utils.ts && rm components/ui/badge.tsx"
        if with_install:
            changes += " && npm install is-number@7.0.0 --no-audit --no-fund"
        await first.commands.run(changes, timeout=600)

        local, archived, generic = [], [], []
        snapshot = WorkspaceSnapshot()
        archive = b""
        for _ in range(runs):
            started = time.perf_counter()
            snapshot = await first.snapshot(index)
            local.append(time.perf_counter() - started)
            archive = snapshot.to_archive()
            archived.append(time.perf_counter() - started)
            started = time.perf_counter()
            await Sandbox.snapshot(first, index)
            generic.append(time.perf_counter() - started)

        restores = []
        for _ in range(max(1, min(runs, 3))):
            second = await backend.create("nextjs", timeout=900)
            try:
                started = time.perf_counter()
                await second.restore(WorkspaceSnapshot.from_archive(archive))
                restores.append(time.perf_counter() - started)
            finally:
                await second.kill()
    finally:
        await first.kill()

    print(
        f"workspace: {len(snapshot.files)} files changed or added, {len(snapshot.deleted)} deleted"
    )
    print(f"  content {snapshot.size / 1024:.1f} KB, stored archive {len(archive) / 1024:.1f} KB")
    install = " (with npm install)" if snapshot.needs_install() else ""
    rows = [
        ("snapshot per tool call (upper layer)", local),
        ("snapshot + archive for PostgreSQL", archived),
        ("generic snapshot (hashes through commands)", generic),
        (f"restore onto a new sandbox{install}", restores),
    ]
    for label, samples in rows:
        print(f"{label:<48} {median_ms(samples)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--with-install", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.with_install))
