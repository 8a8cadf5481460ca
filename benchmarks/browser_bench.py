"""What the browser check and the screenshot cost on the demo app, with a warm browser.

    sudo .venv/bin/python benchmarks/browser_bench.py --runs 5

Starts one Next.js sandbox from the cached template with the demo's todo page, requests `/`
(as the routes check does, so it is compiled), starts the worker's shared Chromium once, then
times N browser checks of `/` and N screenshots exactly as the activities run them. Prints the
medians, the screenshot's size, and the resident memory of the Chromium process tree (its
Playwright driver included), so the figures are per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.browser import BrowserActivities, SharedBrowser
from activities.checks import request_routes
from benchmarks.snapshot_bench import demo_files
from runtime.settings import SandboxNetwork, Settings
from sandboxes.base import WriteEntry
from sandboxes.local.backend import LocalBackend
from sandboxes.local.templates import built_template


def browser_rss_mb(root: int) -> float:
    """Resident memory of the Chromium and Playwright-driver processes under `root`."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(
                line.split()[1]
                for line in status.read_text().splitlines()
                if line.startswith("PPid")
            )
        except (OSError, StopIteration):
            continue
        children.setdefault(int(ppid), []).append(int(status.parent.name))
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"chromium" in command or b"playwright" in command:
            line = next((x for x in status.splitlines() if x.startswith("VmRSS")), "VmRSS: 0 kB")
            total += int(line.split()[1])
    return total / 1024


async def main(runs: int) -> None:
    settings = Settings(
        qai_data_dir=Path(tempfile.mkdtemp(prefix="qai-browser-bench-")),
        qai_sandbox_network=SandboxNetwork.NONE,
        qai_sandbox_pool_size=0,
    )  # type: ignore[call-arg]
    backend = LocalBackend(settings, templates={"nextjs": built_template(Settings(), "nextjs")})
    sandbox = await backend.create("nextjs", timeout=900)
    shared = SharedBrowser()
    checks = BrowserActivities(services=None, browser=shared)  # type: ignore[arg-type]
    try:
        await sandbox.files.write_files([WriteEntry(p, c) for p, c in demo_files().items()])
        await request_routes(sandbox, ["/"])
        origin = sandbox.preview_url(3000).rstrip("/")
        started = time.perf_counter()
        await shared.browser()
        print(f"browser start   {time.perf_counter() - started:.2f} s")
        first = time.perf_counter()
        issues, _ = await checks._check_route(origin, "/")
        print(f"first check     {time.perf_counter() - first:.2f} s: {[i.text() for i in issues]}")
        check_s, shot_s, both_s, sizes = [], [], [], []
        for _ in range(runs):
            mark = time.perf_counter()
            await checks._check_route(origin, "/")
            check_s.append(time.perf_counter() - mark)
            mark = time.perf_counter()
            _, image = await checks._check_route(origin, "/", shoot=True)
            both_s.append(time.perf_counter() - mark)
            mark = time.perf_counter()
            image = await checks._capture(origin)
            shot_s.append(time.perf_counter() - mark)
            sizes.append(len(image or b""))
        print(f"check per route {statistics.median(check_s):.2f} s (warm, median of {runs})")
        print(
            f"screenshot      {statistics.median(shot_s):.2f} s, {statistics.median(sizes):.0f} B"
        )
        print(f"check of / with its screenshot {statistics.median(both_s):.2f} s")
        print(f"added to the demo run (one route, `/`) {statistics.median(both_s):.2f} s")
        print(f"chromium memory {browser_rss_mb(os.getpid()):.0f} MB (browser + Playwright driver)")
    finally:
        await shared.close()
        await sandbox.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
