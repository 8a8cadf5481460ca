"""How long a run's checks take on the template app: tsc, the route, the server log.

    sudo .venv/bin/python benchmarks/checks_bench.py --runs 3

Each run starts a cold Next.js sandbox from the cached template, writes the demo's todo page
(as a run would), waits for the warm-up compile the sandbox starts by itself, then times the
three checks exactly as the check activities run them, and counts the sandbox's CPU-seconds
for types and routes (its cgroup). Figures are medians of N runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activities.checks import read_server_log, request_routes, run_tsc
from benchmarks.snapshot_bench import demo_files
from runtime.settings import SandboxNetwork, Settings
from sandboxes.base import WriteEntry
from sandboxes.local.backend import LocalBackend
from sandboxes.local.cgroups import SandboxCgroups
from sandboxes.local.layout import Layout, cgroup_name
from sandboxes.local.templates import built_template


async def main(runs: int) -> None:
    settings = Settings(
        qai_data_dir=Path(tempfile.mkdtemp(prefix="qai-checks-bench-")),
        qai_sandbox_network=SandboxNetwork.NONE,
        qai_sandbox_pool_size=0,
    )  # type: ignore[call-arg]
    backend = LocalBackend(settings, templates={"nextjs": built_template(Settings(), "nextjs")})
    figures: dict[str, list[float]] = {"types": [], "routes": [], "server log": [], "all": []}
    cpu: dict[str, list[float]] = {"types": [], "routes": []}
    for _ in range(runs):
        sandbox = await backend.create("nextjs", timeout=900)
        try:
            await sandbox.files.write_files([WriteEntry(p, c) for p, c in demo_files().items()])
            await asyncio.sleep(15)  # the model's turns; the warm-up compile runs meanwhile
            group = SandboxCgroups(cgroup_name(Layout(backend.root / sandbox.sandbox_id)))
            started, cpu_mark = time.perf_counter(), group.cpu_seconds() or 0.0
            types = await run_tsc(sandbox)
            figures["types"].append(time.perf_counter() - started)
            cpu["types"].append((group.cpu_seconds() or 0.0) - cpu_mark)
            mark, cpu_mark = time.perf_counter(), group.cpu_seconds() or 0.0
            routes = await request_routes(sandbox, ["/"])
            figures["routes"].append(time.perf_counter() - mark)
            cpu["routes"].append((group.cpu_seconds() or 0.0) - cpu_mark)
            mark = time.perf_counter()
            log = await read_server_log(sandbox, routes.log_offset or 0)
            figures["server log"].append(time.perf_counter() - mark)
            figures["all"].append(time.perf_counter() - started)
            print(f"statuses: {types.status}, {routes.status}, {log.status}", flush=True)
        finally:
            await sandbox.kill()
    for name, samples in figures.items():
        used = f", {statistics.median(cpu[name]):.2f} CPU-s" if name in cpu else ""
        print(f"{name:<12} {statistics.median(samples):.2f} s{used}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
