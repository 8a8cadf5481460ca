"""One sandbox's files on the host, its state.json and its log lines (backend and supervisor)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ID_PATTERN = re.compile(r"^sbx-[0-9a-f]{12}$")
SANDBOX_UID = SANDBOX_GID = 1000
"""The sandbox user as the sandbox sees it."""
HOST_ID_BASE = 200_000
ID_COUNT = 65_536
"""A sandbox's user namespace maps its ids 0..65535 to the host's 200000..265535, ids no host
account uses: an escape lands as host uid 201000, owner of nothing but sandbox files."""
HOST_SANDBOX_UID = HOST_SANDBOX_GID = HOST_ID_BASE + SANDBOX_UID
STAGE_ROOT = Path("/run/qai-sandboxes")
"""Where each sandbox's workspace and host files are bound for bubblewrap to find: it runs as
the user namespace's root, which may not traverse the (root-only) data directory."""


def stage_dir(sandbox_id: str) -> Path:
    return STAGE_ROOT / sandbox_id


def log(message: str) -> None:
    """A timestamped line on the supervisor's stdout, which is its `Layout.log` file."""
    print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {message}", flush=True)


@dataclass(frozen=True)
class Layout:
    """Paths of one sandbox under `<QAI_DATA_DIR>/sandboxes/<id>/`."""

    root: Path

    @property
    def sandbox_id(self) -> str:
        return self.root.name

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def disk(self) -> Path:
        """A size-limited tmpfs holding the overlay's upper and work dirs."""
        return self.root / "disk"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def envd_sock(self) -> Path:
        """envd's socket: made by the supervisor (root) and handed to envd as an open fd, so the
        sandbox never owns a path the host connects to."""
        return self.root / "envd.sock"

    @property
    def ready(self) -> Path:
        """Written by the supervisor once envd says it serves."""
        return self.root / "ready"

    @property
    def host_dir(self) -> Path:
        """Owned by root, bound read-only at /run/qai/host: envd config, passwd, proxy socket."""
        return self.root / "host"

    @property
    def ctl_sock(self) -> Path:
        """The supervisor's control socket (root only, never mounted into the sandbox)."""
        return self.root / "ctl.sock"


def sandboxes_root(data_dir: Path) -> Path:
    return data_dir / "sandboxes"


def read_state(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, identifies a process across pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


def state_alive(state: dict[str, Any], margin: float = 0) -> bool:
    """True while a sandbox has `margin` seconds left and its supervisor is the one that started."""
    supervisor = state.get("supervisor") or {}
    return time.time() < state["expires_at"] - margin and process_alive(
        supervisor.get("pid"), supervisor.get("start_time")
    )


def process_alive(pid: int | None, start_time: int | None) -> bool:
    """True when `pid` still is the process that started at `start_time` (zombies count as dead)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0] != b"Z" and int(fields[19]) == start_time


def cgroup_name(layout: Layout) -> str:
    """Cgroups are host-wide: tag them with the data dir so one checkout never reaps another's."""
    tag = hashlib.sha1(str(layout.root.parent).encode()).hexdigest()[:8]
    return f"{tag}-{layout.sandbox_id}"


def cgroup_tag(data_dir: Path) -> str:
    return hashlib.sha1(str(sandboxes_root(data_dir)).encode()).hexdigest()[:8]


def update_state(path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read-modify-write under a lock, since the backend and the supervisor both write the state."""
    with open(path.with_name("state.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(path)
        change(state)
        write_state(path, state)
        return state


def upper_dir(layout: Layout) -> Path:
    """The overlay's upper layer: exactly what the sandbox changed relative to its template."""
    return layout.disk / "upper"
