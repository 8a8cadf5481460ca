"""Local sandbox figures: create, first command and first preview, cold and from the warm pool.

    sudo .venv/bin/python benchmarks/sandbox_bench.py --runs 5            # the Next.js template
    sudo .venv/bin/python benchmarks/sandbox_bench.py --template static   # a tiny static server

The Next.js template is built (or found cached) first. Cold runs start a new sandbox (the first,
which warms the OS caches, is left out of the medians); pooled runs wait until the warm pool holds
a warmed sandbox, then time `create()` handing it out. Agent-paced runs are what a user sees
after a run on a cold sandbox: create, wait `--agent-seconds` (the model's first turns), write a
new page, then time until the preview shows it; `--no-warm` leaves out the first-page request
the sandbox makes when its app starts, for comparison. Figures are medians of N runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.settings import SandboxNetwork, Settings
from sandboxes.local.backend import LocalBackend
from sandboxes.local.layout import HOST_SANDBOX_GID, HOST_SANDBOX_UID
from sandboxes.local.pool import WarmPool
from sandboxes.local.templates import LocalTemplate, built_template


def static_template(directory: Path) -> LocalTemplate:
    (directory / "index.html").write_text("<h1>static</h1>\n")
    for path in (directory, directory / "index.html"):
        os.chown(path, HOST_SANDBOX_UID, HOST_SANDBOX_GID)  # the sandbox user, as the host sees it
    start = "exec python3 -m http.server 3000 --bind 127.0.0.1"
    return LocalTemplate(name="static", directory=directory, start_cmd=start, port=3000)


PAGES = {
    "nextjs": ("app/page.tsx", "export default function Page() {{ return <h1>{}</h1>; }}\n"),
    "static": ("index.html", "<h1>{}</h1>\n"),
}


async def first_preview(url: str, started: float, limit: float = 300, shows: str = "") -> float:
    async with httpx.AsyncClient() as client:
        while True:
            try:
                response = await client.get(url, timeout=120)
                if response.status_code == 200 and shows in response.text:
                    return time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > limit:
                raise SystemExit(f"no preview at {url} after {limit:g} s")
            await asyncio.sleep(0.01)


@dataclass
class Figures:
    creates: list[float] = field(default_factory=list)
    commands: list[float] = field(default_factory=list)
    previews: list[float] = field(default_factory=list)

    async def measure(self, backend: LocalBackend, template: LocalTemplate, label: str) -> str:
        """Time one create, its first command and its first preview; returns the sandbox id."""
        started = time.perf_counter()
        sandbox = await backend.create(template.name, timeout=600)
        created = time.perf_counter() - started
        await sandbox.commands.run("true")
        commanded = time.perf_counter() - started
        preview = await first_preview(sandbox.preview_url(template.port or 3000), started)
        await sandbox.kill()
        print(
            f"{label:>15}: create {created:.3f} s, first command {commanded:.3f} s,"
            f" first preview {preview:.3f} s",
            flush=True,
        )
        self.creates.append(created)
        self.commands.append(commanded)
        self.previews.append(preview)
        return sandbox.sandbox_id

    async def measure_after_write(
        self, backend: LocalBackend, template: LocalTemplate, label: str, pause: float
    ) -> None:
        """Create, wait like an agent would, write a new page, time until the preview shows it."""
        sandbox = await backend.create(template.name, timeout=600)
        await asyncio.sleep(pause)
        path, page = PAGES[template.name]
        marker = f"written {time.time_ns()}"
        started = time.perf_counter()
        await sandbox.files.write(path, page.format(marker))
        preview = await first_preview(
            sandbox.preview_url(template.port or 3000), started, shows=marker
        )
        await sandbox.kill()
        print(f"{label:>15}: preview of the new page {preview:.3f} s after writing it", flush=True)
        self.previews.append(preview)

    def summary(self, what: str) -> str:
        return (
            f"{what}: median over {len(self.creates)} runs:"
            f" create {statistics.median(self.creates):.3f} s,"
            f" create+first command {statistics.median(self.commands):.3f} s,"
            f" create+first preview {statistics.median(self.previews):.3f} s"
        )


async def wait_warm(backend: LocalBackend, template: LocalTemplate, limit: float = 600) -> str:
    """The id of a warm pool sandbox, once the pool has one (not part of the figures)."""
    deadline = time.perf_counter() + limit
    while True:
        warm = [e.sandbox_id for e in backend.pool.entries(template)[0] if e.warm]
        if warm:
            return warm[0]
        if time.perf_counter() > deadline:
            raise SystemExit(f"the pool held no warm sandbox after {limit:g} s")
        await asyncio.sleep(0.05)


async def bench(template: LocalTemplate, runs: int, data_dir: Path, agent_seconds: float) -> None:
    def backend_for(pool_size: int) -> LocalBackend:
        settings = Settings(
            qai_data_dir=data_dir,
            qai_sandbox_network=SandboxNetwork.REGISTRY,
            qai_sandbox_pool_size=pool_size,
        )
        backend = LocalBackend(settings, templates={template.name: template})
        backend.pool = WarmPool(backend, pool_size, template=template.name)
        return backend

    cold = backend_for(0)
    await cold.start()
    cold_figures = Figures()
    await Figures().measure(cold, template, "cold warm-up")  # OS caches; left out
    for run in range(1, runs + 1):
        await cold_figures.measure(cold, template, f"cold run {run}")

    paced = Figures()
    for run in range(1, runs + 1):
        await paced.measure_after_write(cold, template, f"paced run {run}", agent_seconds)

    pooled = backend_for(1)
    await pooled.start()
    pooled_figures = Figures()
    try:
        for run in range(1, runs + 1):
            expected = await wait_warm(pooled, template)
            got = await pooled_figures.measure(pooled, template, f"pooled run {run}")
            if got != expected:
                raise SystemExit(f"create() did not hand out the warm pool sandbox {expected}")
    finally:
        await pooled.close()
        for sandbox_id in pooled.list_ids():
            await pooled.kill(sandbox_id)
    print(cold_figures.summary(f"template {template.name}, cold"))
    print(pooled_figures.summary(f"template {template.name}, from the warm pool"))
    print(
        f"template {template.name}, cold, agent-paced ({agent_seconds:g} s before the write):"
        f" median over {runs} runs: preview {statistics.median(paced.previews):.3f} s after"
        " the write"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--template", choices=["nextjs", "static"], default="nextjs")
    parser.add_argument("--agent-seconds", type=float, default=15)
    parser.add_argument("--no-warm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qai-bench-") as scratch:
        if args.template == "nextjs":
            template = built_template(Settings())
        else:
            (Path(scratch) / "static").mkdir()
            template = static_template(Path(scratch) / "static")
        if args.no_warm:
            template = dataclasses.replace(template, ready_path=None)
        asyncio.run(bench(template, args.runs, Path(scratch) / "data", args.agent_seconds))


if __name__ == "__main__":
    main()
