"""Throughput: N projects started at once on one host, each run against its ideal (model time).

    sudo .venv/bin/python benchmarks/concurrency_bench.py [--runs 8] [--latency 1.0] [--turns 14]

The whole stack in one process, as a user's host runs it: embedded PostgreSQL in a temporary
directory, Temporal's dev server, the scripted model as its own process (it answers every call
after `--latency` seconds), one worker with the settings' warm pool, and the preview gateway.
Each project's run writes the demo's todo app and then makes small tool calls until its
`--turns` model turns are used; every check runs on every draft.

It reports the wall time; each run's duration against its model time; the time per activity
type (median, p95); the CPU-seconds each run costs by phase, from the sandboxes' cgroup CPU
counters (sampled) laid over the activities' start and end times in Temporal's history, and the
worker's own CPU time; and the CPU an idle live preview burns per minute. The host's load
average is printed first: on a shared machine, CPU-seconds mean more than seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.localstack import TemporalDevServer  # noqa: E402

from activities.services import open_services  # noqa: E402
from benchmarks.snapshot_bench import demo_files  # noqa: E402
from gateway.server import running_gateway  # noqa: E402
from runtime.processes import free_port  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from runtime.temporal import ensure_search_attributes  # noqa: E402
from sandboxes.local.cgroups import SandboxCgroups  # noqa: E402
from sandboxes.local.layout import ID_PATTERN, Layout, cgroup_name, sandboxes_root  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from submission import submit_prompt, wait_for_reply  # noqa: E402
from worker import build_workers  # noqa: E402
from workflows.project import agent_run_workflow_id  # noqa: E402

SAMPLE_SECONDS = 0.25
PHASES = {
    "run_tool": "tool calls",
    "check_types": "check: types",
    "check_routes": "check: routes",
    "check_server_log": "check: server log",
    "check_browser": "check: browser",
    "screenshot": "browser / screenshot",
    "take_screenshot": "browser / screenshot",
}


def script(turns: int) -> dict[str, Any]:
    """The demo's todo app in the first turn, then small tool calls, then the summary."""
    files = [{"path": path, "content": text} for path, text in demo_files().items()]
    steps: list[dict[str, Any]] = [
        {"content": "Writing the app.", "tool_calls": [call("createOrUpdateFiles", files=files)]}
    ]
    small = [
        call("terminal", command="true"),
        call("readFiles", files=["app/page.tsx"]),
        call("terminal", command="ls app components"),
    ]
    for n in range(max(0, turns - 2)):
        steps.append({"content": f"Step {n + 2}.", "tool_calls": [small[n % len(small)]]})
    steps.append({"content": "<task_summary>A task tracker for the benchmark.</task_summary>"})
    return {"title": "Bench", "default": {"turns": steps}}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def merged(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Time windows with the overlapping ones joined."""
    joined: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(end, joined[-1][1]))
        else:
            joined.append((start, end))
    return joined


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and its waited-for children (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def tree_cpu(root: int) -> float:
    """CPU seconds of a process and all its live descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += process_cpu(pid)
        todo.extend(children.get(pid, []))
    return total


@dataclass
class Sampler:
    """Every SAMPLE_SECONDS: each sandbox's cgroup CPU counter, and this process's CPU time."""

    root: Path
    series: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    worker: list[tuple[float, float]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def sample(self) -> None:
        now = time.time()
        self.worker.append((now, time.process_time()))
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if not ID_PATTERN.match(path.name):
                continue
            cpu = SandboxCgroups(cgroup_name(Layout(path))).cpu_seconds()
            if cpu is not None:
                self.series[path.name].append((now, cpu))

    def at(self, sandbox_id: str, when: float) -> float:
        """The sandbox's CPU counter at `when`, interpolated between samples."""
        points = self.series.get(sandbox_id, [])
        if not points:
            return 0.0
        times = [t for t, _ in points]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return points[0][1]
        if i >= len(points):
            return points[-1][1]
        (t0, c0), (t1, c1) = points[i - 1], points[i]
        return c0 + (c1 - c0) * (when - t0) / max(t1 - t0, 1e-9)


@dataclass
class SqlCounter:
    """The worker's SQL statements and the time spent in them (a round trip each)."""

    count: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)
    _started: dict[int, float] = field(default_factory=dict)

    def before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()
        self.kinds[" ".join(statement.split())[:70]] += 1

    def after(self, conn: Any, cursor: Any, *_: Any) -> None:
        self.count += 1
        self.seconds += time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())


@dataclass
class Step:
    activity: str
    scheduled: float
    started: float | None = None
    closed: float | None = None
    sandbox_id: str | None = None


async def steps_of(client: Client, workflow_id: str) -> tuple[list[Step], float, float]:
    """The run's activities from its history, and when the workflow started and closed."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    by_id: dict[int, Step] = {}
    steps: list[Step] = []
    opened = closed = 0.0
    for event in history.events:
        when = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            opened = when
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            closed = when
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            step = Step(attrs.activity_type.name, when)
            step.sandbox_id = _sandbox_id(attrs.input.payloads)
            by_id[event.event_id] = step
            steps.append(step)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            by_id[event.activity_task_started_event_attributes.scheduled_event_id].started = when
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            step = by_id[attrs.scheduled_event_id]
            step.closed = when
            step.sandbox_id = step.sandbox_id or _sandbox_id(attrs.result.payloads)
    return steps, opened, closed


def _sandbox_id(payloads: Any) -> str | None:
    for payload in payloads:
        try:
            value = json.loads(payload.data)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("sandbox_id"), str):
            return value["sandbox_id"]
    return None


async def one_run(client: Client, services: Any, settings: Settings, n: int) -> tuple[Any, float]:
    started = time.time()
    submitted = await submit_prompt(client, services.db, settings, f"Bench project {n}")
    await wait_for_reply(client, services.db, settings, submitted.message_id)
    return submitted, time.time() - started


async def main(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qai-concurrency-bench-") as tmp:
        script_path = Path(tmp) / "script.json"
        script_path.write_text(json.dumps(script(args.turns)))
        llm = subprocess.Popen(  # noqa: ASYNC220 - started once, before the loop is busy
            [sys.executable, "-m", "scripted_llm", "--script", str(script_path), "--port", "0",
             "--delay", str(args.latency)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert llm.stdout is not None
            base_url = llm.stdout.readline().strip()
            temporal = TemporalDevServer(
                state_dir=Path(tmp) / "temporal", port=free_port(), ui_port=None
            )
            async with EmbeddedPostgres(Path(tmp) / "pg") as pg, temporal:
                await upgrade(pg.url)
                client = await Client.connect(
                    temporal.address, data_converter=pydantic_data_converter
                )
                await ensure_search_attributes(client)
                overrides: dict[str, Any] = {}
                if args.pool is not None:
                    overrides["qai_sandbox_pool_size"] = args.pool
                if args.slots is not None:
                    overrides["qai_cpu_slots"] = args.slots
                settings = Settings(
                    _env_file=None,  # type: ignore[call-arg]
                    openai_api_key="bench",
                    openai_base_url=base_url,
                    qai_model="scripted",
                    qai_title_model="scripted",
                    qai_sandbox_network="none",
                    qai_preview_port=free_port(),
                    qai_metrics_port=0,
                    qai_task_queue=f"bench-{uuid.uuid4().hex[:6]}",
                    qai_data_dir=ROOT / ".qai",
                    temporal_address=temporal.address,
                    **overrides,
                )
                async with (
                    open_services(settings, pg.url) as services,
                    build_workers(client, services),
                    running_gateway(settings, services.db, client),
                ):
                    await bench(args, settings, services, client, [pg.pid, temporal.pid])
        finally:
            llm.terminate()
            llm.wait(10)


async def bench(
    args: argparse.Namespace,
    settings: Settings,
    services: Any,
    client: Client,
    helper_pids: list[int | None],
) -> None:
    backend = services.sandboxes
    if backend.pool.size:
        print(f"waiting for the warm pool ({backend.pool.size}) ...", flush=True)
        template = await backend.template("nextjs")
        while sum(e.warm for e in backend.pool.entries(template)[0]) < backend.pool.size:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
    sql = SqlCounter()
    sa.event.listen(services.db.engine.sync_engine, "before_cursor_execute", sql.before)
    sa.event.listen(services.db.engine.sync_engine, "after_cursor_execute", sql.after)
    sampler = Sampler(sandboxes_root(settings.data_dir))
    sampling = asyncio.create_task(sampler.run())
    helpers_before = sum(tree_cpu(pid) for pid in helper_pids if pid)
    cpu_before, wall_before = time.process_time(), time.time()
    load_before = os.getloadavg()
    outcomes = await asyncio.gather(
        *(one_run(client, services, settings, n) for n in range(args.runs))
    )
    wall = time.time() - wall_before
    worker_cpu = time.process_time() - cpu_before
    helpers_cpu = sum(tree_cpu(pid) for pid in helper_pids if pid) - helpers_before
    print(f"\n{args.runs} runs, model {args.latency:g} s/call, {args.turns} turns each; "
          f"load average before the runs {load_before}", flush=True)  # fmt: skip
    print(f"wall time: {wall:.1f} s")

    durations: dict[str, list[float]] = defaultdict(list)
    waits: dict[str, list[float]] = defaultdict(list)
    ratios, run_seconds = [], []
    costs: dict[str, list[float]] = defaultdict(list)
    sandboxes: set[str] = set()
    for submitted, _seconds in outcomes:
        steps, opened, closed = await steps_of(client, agent_run_workflow_id(submitted.message_id))
        turns = sum(s.activity == "agent_turn" for s in steps)
        ideal = turns * args.latency
        run_seconds.append(closed - opened)
        ratios.append(ideal / max(closed - opened, 1e-9))
        sandbox = next((s.sandbox_id for s in steps if s.sandbox_id), None)
        if sandbox:
            sandboxes.add(sandbox)
        first_tool = next((s.started for s in steps if s.activity == "run_tool"), opened)
        run_cost: dict[str, float] = defaultdict(float)
        if sandbox:
            # A pooled sandbox's warm-up ran before the run claimed it; it is the run's cost.
            run_cost["sandbox start + first compile (to 1st tool)"] = sampler.at(
                sandbox, first_tool or opened
            )
        windows: list[tuple[float, float]] = []
        for step in steps:
            if step.started is None or step.closed is None:
                continue
            durations[step.activity].append(step.closed - step.started)
            waits[step.activity].append(step.started - step.scheduled)
            if step.sandbox_id and step.activity in PHASES and step.started >= (first_tool or 0):
                if step.activity.startswith("check_"):
                    windows.append((step.started, step.closed))
                used = sampler.at(step.sandbox_id, step.closed) - sampler.at(
                    step.sandbox_id, step.started
                )
                run_cost[PHASES[step.activity]] += used
        if sandbox:
            # Checks that ran at the same time share the sandbox's counter: their union counts.
            checks = sum(
                sampler.at(sandbox, end) - sampler.at(sandbox, start)
                for start, end in merged(windows)
            )
            total = sampler.at(sandbox, closed)
            run_cost["sandbox total (to the run's end)"] = total
            accounted = sum(
                v for k, v in run_cost.items() if not k.startswith(("sandbox total", "check:"))
            )
            accounted += checks
            run_cost["checks, all (overlaps counted once)"] = checks
            run_cost["between steps (dev server compiles, HMR)"] = max(0.0, total - accounted)
            share = (worker_cpu + helpers_cpu) / args.runs
            run_cost["worker + PostgreSQL + Temporal (share)"] = share
            run_cost["all (sandbox total + share)"] = total + share
        for name, value in run_cost.items():
            costs[name].append(value)
    others = [
        points[-1][1] for sid, points in sampler.series.items() if sid not in sandboxes and points
    ]
    print(f"run duration (workflow start to end): median {statistics.median(run_seconds):.1f} s, "
          f"p95 {percentile(run_seconds, 0.95):.1f} s")  # fmt: skip
    print(f"ratio to the ideal (model time / duration): median {statistics.median(ratios):.0%}, "
          f"min {min(ratios):.0%}")  # fmt: skip
    print("\nactivity               n   median     p95   (queue wait median)")
    for name in sorted(durations, key=lambda n: -statistics.median(durations[n])):
        values = durations[name]
        wait = statistics.median(waits[name])
        print(f"{name:<20} {len(values):>4} {statistics.median(values):>7.2f} s "
              f"{percentile(values, 0.95):>6.2f} s   ({wait:.2f} s)")  # fmt: skip
    print("\nCPU-seconds per run, by phase (sandbox cgroup)   median     p95")
    print("  (checks run in parallel share the counter: each check's figure includes the other's)")
    for name, values in costs.items():
        print(f"  {name:<44} {statistics.median(values):>6.2f} {percentile(values, 0.95):>7.2f}")
    print(f"sandboxes no run used (pool refills): {len(others)}, {sum(others):.1f} CPU-s")
    print(f"worker process CPU: {worker_cpu:.1f} s in all, {worker_cpu / args.runs:.2f} s per run")
    print(f"PostgreSQL + Temporal server CPU: {helpers_cpu:.1f} s in all, "
          f"{helpers_cpu / args.runs:.2f} s per run")  # fmt: skip

    async with services.db.session() as session:
        rows = (
            await session.execute(
                sa.text("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
            )
        ).all()
    written = ", ".join(f"{kind} {count / args.runs:.1f}" for kind, count in rows)
    print(f"events written per run: {written}")
    print(f"SQL statements per run: {sql.count / args.runs:.0f}, "
          f"{sql.seconds / args.runs:.2f} s in them per run "
          f"({sql.seconds / max(sql.count, 1) * 1000:.1f} ms each)")  # fmt: skip
    if args.sql:
        for statement, count in sql.kinds.most_common(12):
            print(f"  {count / args.runs:6.1f}  {statement}")
    turns = durations.get("agent_turn", [])
    if turns:
        print(f"agent_turn beyond the model's {args.latency:g} s: median "
              f"{statistics.median(turns) - args.latency:.2f} s")  # fmt: skip

    if args.idle_seconds and sandboxes:
        sandbox = sorted(sandboxes)[0]
        await asyncio.sleep(5)  # let the last compile and the checks' requests settle
        group = SandboxCgroups(cgroup_name(Layout(sandboxes_root(settings.data_dir) / sandbox)))
        first = group.cpu_seconds() or 0.0
        await asyncio.sleep(args.idle_seconds)
        used = (group.cpu_seconds() or 0.0) - first
        per_minute = used * 60 / args.idle_seconds
        print(f"\nidle live preview: {per_minute:.3f} CPU-s per minute "
              f"({per_minute / 60:.2%} of one core) over {args.idle_seconds} s")  # fmt: skip
    sampling.cancel()
    await backend.pool.discard_started()
    for sandbox in sandboxes:
        try:
            await services.sandboxes.kill(sandbox)
        except Exception as error:
            print(f"could not kill {sandbox}: {error}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="projects started at once")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per model call")
    parser.add_argument("--turns", type=int, default=14, help="model turns per run")
    parser.add_argument("--pool", type=int, default=None, help="QAI_SANDBOX_POOL_SIZE")
    parser.add_argument("--slots", type=int, default=None, help="QAI_CPU_SLOTS")
    parser.add_argument("--sql", action="store_true", help="the most frequent SQL statements")
    parser.add_argument("--idle-seconds", type=int, default=60, help="idle preview measure")
    asyncio.run(main(parser.parse_args()))
