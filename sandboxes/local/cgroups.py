"""Per-sandbox cgroups capping processes, memory and CPU time (cgroup v1 or v2, whichever the
host has), and counting the CPU time the sandbox used (`cpu_seconds`: benchmarks and per-run
costs).

A fork bomb, memory hog or busy loop then hurts only its own sandbox. Without writable cgroups
the supervisor falls back to RLIMIT_NPROC (set in bwrap's child) and smaller scratch tmpfs,
and logs that memory and CPU are uncapped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "qai"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("pids", "memory", "cpu", "cpuacct")
"""cgroup v1 hierarchies a sandbox joins; cpuacct only counts (it caps nothing)."""


def _v1_controllers(root: Path) -> list[str]:
    """cgroup v1 hierarchies used: pids and memory always, cpu and cpuacct when the host mounts
    them (once each: where they are one hierarchy, cpu stands for both)."""
    used = ["pids", "memory"]
    if (root / "cpu").is_dir():
        used.append("cpu")
    cpuacct = root / "cpuacct"
    if cpuacct.is_dir() and not ("cpu" in used and cpuacct.resolve() == (root / "cpu").resolve()):
        used.append("cpuacct")
    return used


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


class SandboxCgroups:
    def __init__(self, sandbox_id: str, root: Path = ROOT) -> None:
        self.sandbox_id = sandbox_id
        self.v2 = (root / "cgroup.controllers").exists()
        if self.v2:
            self.dirs = [root / PARENT / sandbox_id]
        else:
            self.dirs = [root / c / PARENT / sandbox_id for c in _v1_controllers(root)]
        self.root = root

    def create(self, memory_bytes: int, pids: int, cpus: float | None = None) -> None:
        """Raises OSError when cgroups cannot be used here. `cpus`: CPU time per second."""
        quota = None if cpus is None else max(1000, int(cpus * CPU_PERIOD_US))
        if self.v2:
            parent = self.root / PARENT
            controllers = "+pids +memory" + (" +cpu" if quota else "")
            _write(self.root / "cgroup.subtree_control", controllers)
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", controllers)
            group = self.dirs[0]
            group.mkdir(exist_ok=True)
            _write(group / "pids.max", str(pids))
            _write(group / "memory.max", str(memory_bytes))
            if (group / "memory.swap.max").exists():
                _write(group / "memory.swap.max", "0")
            if quota:
                _write(group / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        pids_dir, mem_dir = self.dirs[:2]
        for group in self.dirs:
            group.mkdir(parents=True, exist_ok=True)
        cpu_dir = next((d for d in self.dirs if d.parent.parent.name == "cpu"), None)
        if quota and cpu_dir is not None:
            _write(cpu_dir / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu_dir / "cpu.cfs_quota_us", str(quota))
        _write(pids_dir / "pids.max", str(pids))
        _write(mem_dir / "memory.limit_in_bytes", str(memory_bytes))
        memsw = mem_dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            _write(memsw, str(memory_bytes))

    def join(self) -> None:
        """Move the calling process in (used in the child before it execs bwrap)."""
        for group in self.dirs:
            _write(group / "cgroup.procs", "0")

    def cpu_stat(self) -> dict[str, int]:
        """The CPU controller's counters (`nr_throttled`, ...); empty without one."""
        group = self.dirs[0] if self.v2 else self.root / "cpu" / PARENT / self.sandbox_id
        path = group / "cpu.stat"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return {}
        return {name: int(value) for name, _, value in (line.partition(" ") for line in lines)}

    def cpu_seconds(self) -> float | None:
        """CPU time the sandbox's processes have used so far; None when it is not counted."""
        try:
            if self.v2:
                for line in (self.dirs[0] / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            for group in self.dirs:
                if (group / "cpuacct.usage").exists():
                    return int((group / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None
        return None

    def pids(self) -> set[int]:
        found: set[int] = set()
        for group in self.dirs:
            try:
                found.update(int(p) for p in (group / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return found

    def kill_all(self, deadline: float = 10.0) -> None:
        end = time.monotonic() + deadline
        while (victims := self.pids()) and time.monotonic() < end:
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for group in self.dirs:
            for _ in range(100):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def leftover_ids(root: Path = ROOT) -> set[str]:
    """Sandbox ids that still have a cgroup (for the sweep after a crash)."""
    bases = (
        [root / PARENT]
        if (root / "cgroup.controllers").exists()
        else [root / c / PARENT for c in _v1_controllers(root)]
    )
    ids: set[str] = set()
    for base in bases:
        if base.is_dir():
            ids.update(p.name for p in base.iterdir() if p.is_dir())
    return ids
