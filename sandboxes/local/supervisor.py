"""The per-sandbox supervisor: a detached root process that owns one sandbox from birth to reaping.

Started by the backend in its own session (`python -m sandboxes.local.supervisor <dir>`), so it
outlives worker restarts. It mounts the workspace (a size-capped tmpfs holding an overlay over the
template), makes the cgroups, runs bubblewrap with envd inside, serves the preview ports and the
registry proxy, and tears everything down when the sandbox is killed, expires, or envd dies.
Standard library only (plus its siblings and runtime/relay.py), so it starts fast.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

if __name__ == "__main__":  # started as a script: skip the package __init__s (they cost ~30 ms)
    _here = Path(__file__).resolve().parent  # and find `runtime` (for its relay) without a path
    _packages = (
        ("sandboxes", _here.parent),
        ("sandboxes.local", _here),
        ("runtime", _here.parents[1] / "runtime"),
    )
    for _name, _path in _packages:
        _module = types.ModuleType(_name)
        _module.__path__ = [str(_path)]
        sys.modules.setdefault(_name, _module)

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
from typing import Any

from sandboxes.local import mounts, seccomp
from sandboxes.local.cgroups import SandboxCgroups
from sandboxes.local.layout import (
    HOST_ID_BASE,
    HOST_SANDBOX_GID,
    HOST_SANDBOX_UID,
    ID_COUNT,
    STAGE_ROOT,
    Layout,
    cgroup_name,
    log,
    process_start_time,
    read_state,
    stage_dir,
    update_state,
)

ENVD = Path(__file__).with_name("envd.py")
RELAY = Path(__file__).resolve().parents[2] / "runtime" / "relay.py"
"""Mounted beside envd, which imports it (envd sees nothing else of the project)."""
IN_RUN = "/run/qai"
PROXY_LISTEN = "127.0.0.1:3128"
MIB = 1024 * 1024
UNCAPPED_SCRATCH_MB = 256
"""Size of each of /tmp, /var/tmp and /dev/shm when there are no cgroups: tmpfs is memory, and
without a memory cgroup nothing else bounds what a sandbox keeps there."""
ENVD_COMMAND = ["/usr/bin/python3", "-I", "-S", f"{IN_RUN}/envd.py", f"{IN_RUN}/host/envd.json"]


def sandbox_env(state: dict[str, Any]) -> dict[str, str]:
    """The whole environment commands see: nothing of the worker's."""
    env = {
        "HOME": "/home/user",
        "USER": "user",
        "LOGNAME": "user",
        "SHELL": "/bin/bash",
        "PATH": "/home/user/node_modules/.bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "TMPDIR": "/tmp",
        "NEXT_TELEMETRY_DISABLED": "1",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    env.update(state.get("template_env") or {})
    registry = state.get("npm_registry")
    if registry:
        env["npm_config_registry"] = registry
    if state["network"] == "registry":
        proxy = f"http://{PROXY_LISTEN}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = proxy
        env["npm_config_proxy"] = env["npm_config_https_proxy"] = proxy
        env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1"
    return env


def warm_url(state: dict[str, Any]) -> str | None:
    """The in-sandbox URL of the template's first page, requested once its app starts."""
    port, path = state.get("template_port"), state.get("template_ready_path")
    if port is None or path is None:
        return None
    return f"http://127.0.0.1:{port}{path}"


def system_binds() -> list[str]:
    """Read-only system directories; the host's merged-/usr symlinks are reproduced as symlinks."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def scratch_mb(state: dict[str, Any], cgroups_ok: bool) -> int:
    """Each scratch tmpfs's size: the disk cap under a memory cgroup, bounded without one."""
    return state["disk_mb"] if cgroups_ok else min(state["disk_mb"], UNCAPPED_SCRATCH_MB)


def bind_sources(layout: Layout) -> dict[str, Path]:
    """What bwrap binds, from the sandbox's stage (see `stage_workspace`)."""
    stage = stage_dir(layout.sandbox_id)
    return {
        "/etc/passwd": stage / "host" / "passwd",
        "/etc/group": stage / "host" / "group",
        "/home/user": stage / "home",
        f"{IN_RUN}/host": stage / "host",
        f"{IN_RUN}/envd.py": stage / "host" / "envd.py",
        f"{IN_RUN}/relay.py": stage / "host" / "relay.py",
    }


def stage_workspace(layout: Layout) -> None:
    """Bind the workspace and the host files where the namespace's root can reach them."""
    STAGE_ROOT.mkdir(mode=0o711, exist_ok=True)
    os.chmod(STAGE_ROOT, 0o711)  # others may pass through, not list
    stage = stage_dir(layout.sandbox_id)
    stage.mkdir(mode=0o711, exist_ok=True)
    for name, source in (("home", layout.merged), ("host", layout.host_dir)):
        (stage / name).mkdir(exist_ok=True)
        mounts.mount(str(source), stage / name, "", "", mounts.MS_BIND)


def unstage(sandbox_id: str) -> None:
    stage = stage_dir(sandbox_id)
    for point in mounts.mounts_under(stage):
        mounts.umount(point)
    if not mounts.mounts_under(stage):
        shutil.rmtree(stage, ignore_errors=True)


def bwrap_argv(
    layout: Layout,
    state: dict[str, Any],
    *,
    cgroups_ok: bool = True,
    seccomp_fd: int | None = None,
) -> list[str]:
    def bind(option: str, dest: str) -> list[str]:
        return [option, str(bind_sources(layout)[dest]), dest]

    tmp_size = str(scratch_mb(state, cgroups_ok) * MIB)
    argv = [
        "bwrap",
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--hostname",
        "sandbox",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        "--setenv",
        "HOME",
        "/home/user",
        "--setenv",
        "LANG",
        "C.UTF-8",
    ]
    if state["network"] != "host":
        argv.append("--unshare-net")
    argv += system_binds()
    argv += [
        *bind("--ro-bind", "/etc/passwd"),
        *bind("--ro-bind", "/etc/group"),
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", tmp_size, "--tmpfs", "/dev/shm",
        "--perms", "1777", "--size", tmp_size, "--tmpfs", "/tmp",
        "--dir", "/var",
        "--perms", "1777", "--size", tmp_size, "--tmpfs", "/var/tmp",
        "--perms", "0755", "--dir", "/home",
        *bind("--bind", "/home/user"),
        "--perms", "0755", "--dir", "/run",
        "--perms", "0755", "--dir", IN_RUN,
        *bind("--ro-bind", f"{IN_RUN}/host"),
        *bind("--ro-bind", f"{IN_RUN}/envd.py"),
        *bind("--ro-bind", f"{IN_RUN}/relay.py"),
        "--chdir", "/home/user",
        "--cap-add", "CAP_SETUID",
        "--cap-add", "CAP_SETGID",
    ]  # fmt: skip
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + ENVD_COMMAND


CLONE_NEWUSER = 0x10000000


class UserNamespace:
    """bubblewrap runs in a user namespace of its own whose ids 0..65535 are the host's
    200000..265535, so the sandbox user (1000) is host uid 201000 and its root is host uid
    200000: neither owns anything on the host, nor holds any capability there.

    The child (before exec) unshares and waits; a thread of the supervisor writes its maps (a
    privileged parent may map any range) and lets it go on, as ns root, into bwrap.
    """

    def __init__(self) -> None:
        self._pid_r, self._pid_w = os.pipe()
        self._go_r, self._go_w = os.pipe()
        self.error: str | None = None
        import threading

        self._thread = threading.Thread(target=self._map, daemon=True)
        self._thread.start()

    def _map(self) -> None:
        answer = os.read(self._pid_r, 32)
        try:
            pid = int(answer)
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as fh:
                    fh.write(f"0 {HOST_ID_BASE} {ID_COUNT}\n")
            os.write(self._go_w, b"1")
        except (ValueError, OSError) as error:
            self.error = str(error)
            with contextlib.suppress(OSError):
                os.write(self._go_w, b"0")

    def enter(self) -> None:
        """In the child: a new user namespace, mapped, as its root."""
        try:
            mounts.unshare(CLONE_NEWUSER)
        except OSError:
            os.write(self._pid_w, b"-")
            raise
        os.write(self._pid_w, str(os.getpid()).encode())
        if os.read(self._go_r, 1) != b"1":
            raise OSError("the sandbox's user namespace could not be mapped")
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)

    def close(self) -> None:
        self._thread.join(timeout=5)
        for fd in (self._pid_r, self._pid_w, self._go_r, self._go_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.error:
            log(f"user namespace not mapped: {self.error}")


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.state = read_state(layout.state)
        self.cgroups = SandboxCgroups(cgroup_name(layout))
        self.cgroups_ok = False
        self.bwrap: subprocess.Popen[bytes] | None = None
        # envd's listening socket and readiness pipe, inherited through bwrap.
        with contextlib.suppress(FileNotFoundError):
            layout.envd_sock.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(layout.envd_sock))
        os.chmod(layout.envd_sock, 0o600)
        self.listener.listen(128)
        self.ready_r, self.ready_w = os.pipe()

    # ------------------------------------------------------------ setup

    def mount_workspace(self) -> None:
        layout, state = self.layout, self.state
        template = Path(state["template_dir"])
        if any(c in str(template) for c in ",:\n"):
            raise SystemExit(f"template path {template} cannot be used as an overlay layer")
        layout.disk.mkdir(exist_ok=True)
        layout.merged.mkdir(exist_ok=True)
        size = state["disk_mb"] * MIB
        mounts.mount(
            "tmpfs", layout.disk, "tmpfs", f"size={size},mode=0755",
            mounts.MS_NOSUID | mounts.MS_NODEV,
        )  # fmt: skip
        upper, work = layout.disk / "upper", layout.disk / "work"
        upper.mkdir()
        work.mkdir()
        os.chown(upper, HOST_SANDBOX_UID, HOST_SANDBOX_GID)
        options = f"lowerdir={template},upperdir={upper},workdir={work}"
        mounts.mount(
            "overlay", layout.merged, "overlay", options, mounts.MS_NOSUID | mounts.MS_NODEV
        )

    def write_host_files(self) -> None:
        layout = self.layout
        layout.host_dir.mkdir(mode=0o755, exist_ok=True)
        (layout.host_dir / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            "user:x:1000:1000:user:/home/user:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (layout.host_dir / "group").write_text("root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
        shutil.copyfile(ENVD, layout.host_dir / "envd.py")  # bound from here, like the rest
        shutil.copyfile(RELAY, layout.host_dir / "relay.py")
        config = {
            "listen_fd": self.listener.fileno(),
            "ready_fd": self.ready_w,
            "env": sandbox_env(self.state),
            "start_cmd": self.state.get("start_cmd"),
            "warm_url": warm_url(self.state),
        }
        if self.state["network"] == "registry":
            config["proxy_socket"] = f"{IN_RUN}/host/proxy.sock"
            config["proxy_listen"] = PROXY_LISTEN
        (layout.host_dir / "envd.json").write_text(json.dumps(config))

    def make_cgroups(self) -> None:
        try:
            self.cgroups.create(
                self.state["memory_mb"] * MIB, self.state["pids"], self.state.get("cpus")
            )
            self.cgroups_ok = True
        except OSError as error:
            log(
                f"cgroups unavailable ({error}); falling back to RLIMIT_NPROC, memory and CPU "
                f"uncapped, scratch tmpfs {scratch_mb(self.state, False)} MiB each"
            )

    def _in_child(self) -> None:
        if self.cgroups_ok:
            self.cgroups.join()
        else:
            limit = self.state["pids"]
            resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        self.userns.enter()

    def spawn(self) -> None:
        # Arguments through a pipe (`--args`), so /proc/1/cmdline inside shows no host paths.
        args_r, args_w = os.pipe()
        filter_r, filter_w = os.pipe()  # the compiled seccomp program (well under a pipe's 64 KiB)
        os.write(filter_w, seccomp.program())
        os.close(filter_w)
        argv = bwrap_argv(self.layout, self.state, cgroups_ok=self.cgroups_ok, seccomp_fd=filter_r)
        split = argv.index(ENVD_COMMAND[0])  # bwrap reads options only from --args
        os.write(args_w, b"".join(a.encode() + b"\0" for a in argv[1:split]))
        os.close(args_w)
        self.userns = UserNamespace()
        self.bwrap = subprocess.Popen(
            ["bwrap", "--args", str(args_r), *argv[split:]],
            # The namespace's pipes are used before exec only (close_fds closes them after).
            pass_fds=(args_r, filter_r, self.listener.fileno(), self.ready_w),
            stdin=subprocess.DEVNULL,
            preexec_fn=self._in_child,
            close_fds=True,
        )
        self.userns.close()
        os.close(args_r)
        os.close(filter_r)
        os.close(self.ready_w)
        self.listener.close()  # envd holds it now: if the sandbox dies, connecting fails at once
        log(f"bwrap started, pid {self.bwrap.pid}")

    def prepare(self) -> None:
        """Everything up to a running envd, before asyncio is even imported (start-up time)."""
        log("supervisor up")
        pid = os.getpid()
        update_state(
            self.layout.state,
            lambda s: s.update(supervisor={"pid": pid, "start_time": process_start_time(pid)}),
        )
        self.write_host_files()
        self.mount_workspace()
        stage_workspace(self.layout)
        self.make_cgroups()
        self.spawn()


def failed_log(layout: Layout) -> Path:
    return layout.root.with_name(f"{layout.sandbox_id}.failed.log")


def teardown(layout: Layout, bwrap_pid: int | None = None) -> None:
    """Remove processes, cgroups, mounts and files of one sandbox; safe to repeat after a crash."""
    if bwrap_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(bwrap_pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(bwrap_pid, 0)
    SandboxCgroups(cgroup_name(layout)).remove()
    unstage(layout.sandbox_id)
    for point in mounts.mounts_under(layout.root):
        mounts.umount(point)
    if mounts.mounts_under(layout.root):
        log(f"mounts remain under {layout.root}; leaving its files")
        return
    shutil.rmtree(layout.root, ignore_errors=True)


def main() -> None:
    layout = Layout(Path(sys.argv[1]))
    if os.fork() > 0:  # daemonize: the backend reaps the parent at once, init adopts us
        os._exit(0)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    supervisor = Supervisor(layout)
    reason = "set-up failed"
    try:
        supervisor.prepare()
        from sandboxes.local.host_servers import HostServers

        assert supervisor.bwrap is not None
        servers = HostServers(layout, supervisor.state, supervisor.bwrap.pid, supervisor.ready_r)
        reason = servers.run()
    except BaseException as error:
        log(f"supervisor failed: {error!r}")
        raise
    finally:
        log(f"tearing down: {reason}")
        if not layout.ready.exists():
            # A sandbox that never started: keep its log where the backend can quote it.
            with contextlib.suppress(OSError):
                shutil.copyfile(layout.log, failed_log(layout))
        teardown(layout, supervisor.bwrap.pid if supervisor.bwrap else None)


if __name__ == "__main__":
    main()
