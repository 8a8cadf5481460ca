# ruff: noqa: ASYNC220, ASYNC230, ASYNC240 - quick local calls in a one-user daemon
"""The in-sandbox daemon (like E2B's envd), run by /usr/bin/python3 inside bubblewrap.

Standard library only, plus `runtime/relay.py` mounted beside it: it runs inside the sandbox,
where the project is not mounted. It starts as a capability-less root with only
CAP_SETUID/CAP_SETGID, drops to uid/gid 1000 at once, and then serves JSON-lines requests on a
unix socket bind-mounted from the host:

- exec: run `bash -lc` through a per-command "runner" (a child subreaper), streaming output,
  bounding what is kept, and killing the whole process tree on timeout or kill;
- write/read/list/exists: file operations done here, as the sandbox user, inside /home/user;
- forward: relay raw bytes to 127.0.0.1:<port> inside (the host's preview relay uses this);
- a TCP listener on 127.0.0.1:3128 relaying to the host's registry proxy (registry network mode).

`envd.py runner -- ARGV...` is the runner mode.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

HOME = "/home/user"
UID = GID = 1000
KEEP_HEAD = 16 * 1024
KEEP_TAIL = 48 * 1024
MAX_READ = 64 * 1024 * 1024
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
WARM_SECONDS = 300
"""How long the first-page request may take: a cold Next.js compile on a busy machine."""


# ---------------------------------------------------------------- runner mode


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _descendants(root: int) -> list[int]:
    tree = _children_map()
    found, todo = [], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(root: int) -> None:
    """SIGKILL every descendant of `root` (a subreaper: orphans stay below it) until none is."""
    for _ in range(10_000):
        victims = _descendants(root)
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_all()


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.001)
            return


def runner_main(argv: list[str]) -> int:
    """Run argv as a child of a subreaper; on exit or SIGTERM, kill every process it left behind."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me = os.getpid()

    def stop(signum: int, frame: object) -> None:
        kill_tree(me)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_tree(me)
    return os.waitstatus_to_exitcode(status) if status >= 0 else 1


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "runner":
    sys.exit(runner_main(sys.argv[3:]))  # before the daemon's imports: runners start fast

import asyncio  # noqa: E402
import base64  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

# runtime/relay.py is mounted beside this file (the relays of the host and the gateway use it too).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relay import relay  # noqa: E402

# ---------------------------------------------------------------- paths


class PathError(Exception):
    """A request the workspace cannot serve; `kind` tells the host which error to raise.

    `path` is the failing path relative to /home/user and `written` what a multi-file write
    wrote before it failed, so the model can be told exactly what happened.
    """

    def __init__(self, kind: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.written: list[str] = []

    def reply(self) -> dict:
        reply = {"error": self.kind, "message": str(self)}
        if self.path is not None:
            reply["path"] = self.path
        if self.written:
            reply["written"] = self.written
        return reply


FILE_ERRNO_KINDS = {
    errno.EISDIR: "is_a_directory",
    errno.ENOTDIR: "not_a_directory",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.ENAMETOOLONG: "name_too_long",
}
"""OSErrors of file operations, by errno: each is about the request, not about the sandbox."""


def shown(path: str) -> str:
    """A path as the model writes it: relative to /home/user."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if parts[:2] == ["home", "user"] and path.startswith("/"):
        parts = parts[2:]
    return "/".join(parts) or HOME


def blocking_file(real: str) -> str | None:
    """The first existing non-directory among the parents of `real` (why mkdir failed)."""
    parts = real[len(HOME) + 1 :].split("/")[:-1] if real.startswith(HOME + "/") else []
    current = HOME
    for part in parts:
        current = f"{current}/{part}"
        if os.path.lexists(current) and not os.path.isdir(current):
            return current
        if not os.path.lexists(current):
            return None
    return None


def disk_state() -> str:
    """How full the workspace's disk is, in words (the disk is a size-capped tmpfs)."""
    try:
        st = os.statvfs(HOME)
    except OSError:
        return "the sandbox's disk is full"
    size = st.f_blocks * st.f_frsize // (1024 * 1024)
    free = st.f_bavail * st.f_frsize // 1024
    return f"the sandbox's disk is full ({size} MiB in all, {free} KiB free)"


def file_error(
    error: OSError, path: str, real: str | None = None, action: str = "write"
) -> PathError:
    """A PathError the model can act on, for an OSError while trying to `action` `path`."""
    kind = FILE_ERRNO_KINDS.get(error.errno or 0, "os_error")
    if kind == "is_a_directory":
        message = f"{path} is a directory"
    elif kind == "not_a_directory":
        return under_a_file(path, real)
    elif kind == "no_space":
        message = f"{disk_state()}; {path} could not be stored"
    elif kind == "permission_denied":
        message = f"permission denied: the sandbox user may not {action} {path}"
    elif kind == "name_too_long":
        message = f"a name in {path} is too long"
    else:
        message = f"{path}: {error.strerror or 'the operation failed'}"
    return PathError(kind, message, path)


def under_a_file(path: str, real: str | None) -> PathError:
    """`path` would need a folder where a file is: name that file."""
    blocker = blocking_file(real) if real else None
    if blocker is None:
        message = f"a parent of {path} is a file, not a directory"
    else:
        message = f"{shown(blocker)} is a file, so {path} cannot be created inside it"
    return PathError("not_a_directory", message, path)


def resolve(path: str) -> str:
    """Map a user path to one inside /home/user, refusing `..`, other roots and escaping links."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise PathError("invalid_path", f"invalid path {path!r}")
    full = path if path.startswith("/") else f"{HOME}/{path}"
    parts = [p for p in full.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathError("invalid_path", f"path {path!r} contains '..'; use a path inside {HOME}")
    full = "/" + "/".join(parts)
    if full != HOME and not full.startswith(HOME + "/"):
        raise PathError("invalid_path", f"path {path!r} is outside {HOME}")
    real = os.path.realpath(full)
    if real != HOME and not real.startswith(HOME + "/"):
        raise PathError(
            "invalid_path", f"path {path!r} resolves to {real!r} through a symlink, outside {HOME}"
        )
    return real


def entry(path: str, name: str | None = None) -> dict:
    st = os.lstat(path)
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return {"name": name or os.path.basename(path), "path": path, "type": kind, "size": st.st_size}


def not_found(path: str) -> PathError:
    return PathError("not_found", f"{path!r} does not exist in the sandbox", shown(path))


def write_one(path: str, real: str, data: bytes) -> dict:
    """Write one file; on failure the file keeps its old content (or is not created).

    Space is reserved with fallocate before a byte changes, so a full disk fails the write up
    front instead of leaving a truncated file behind.
    """
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent is a file
        raise under_a_file(shown(path), real) from None
    real = resolve(path)  # the parents may be links made meanwhile; check again
    created = not os.path.lexists(real)
    fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        if data:
            try:
                os.posix_fallocate(fd, 0, len(data))
            except OSError as error:
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
    except OSError:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(real)
        raise
    finally:
        os.close(fd)
    return entry(real)


def op_write(req: dict) -> dict:
    """Write files in order; a failure names its path and the files written before it."""
    files = [(item["path"], base64.b64decode(item["data"])) for item in req["files"]]
    reals = [resolve(path) for path, _ in files]  # refuse a bad path before anything is written
    done: list[dict] = []
    written: list[str] = []
    for (path, data), real in zip(files, reals, strict=True):
        try:
            done.append(write_one(path, real, data))
        except PathError as error:
            error.written = written
            raise
        except OSError as error:
            failure = file_error(error, shown(path), real)
            failure.written = written
            raise failure from None
        written.append(shown(path))
    return {"entries": done}


def op_read(req: dict) -> dict:
    path = req["path"]
    real = resolve(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise not_found(path) from None
    except IsADirectoryError:
        raise is_directory(path) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise is_directory(path)
        if st.st_size > MAX_READ:  # refuse before reading (a sparse file takes no space)
            raise too_large(path, st.st_size)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_READ + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_READ:
        raise too_large(path, len(data))
    return {"data": base64.b64encode(data).decode()}


def is_directory(path: str) -> PathError:
    return PathError(
        "invalid_path", f"{shown(path)} is a directory; list it with the terminal (ls)", shown(path)
    )


def too_large(path: str, size: int) -> PathError:
    return PathError(
        "too_large",
        f"{shown(path)} is {size} bytes, over the {MAX_READ // (1024 * 1024)} MiB "
        "that can be read at once",
        shown(path),
    )


def op_list(req: dict) -> dict:
    real = resolve(req.get("path") or HOME)
    if not os.path.exists(real):
        raise not_found(req.get("path") or HOME)
    if not os.path.isdir(real):
        raise PathError("invalid_path", f"{req['path']!r} is not a directory")
    items = []
    for name in sorted(os.listdir(real)):
        try:
            items.append(entry(os.path.join(real, name), name))
        except FileNotFoundError:
            continue
    return {"entries": items}


def op_exists(req: dict) -> dict:
    real = resolve(req["path"])
    return {"exists": os.path.lexists(real)}


FILE_OPS = {"write": op_write, "read": op_read, "list": op_list, "exists": op_exists}


# ---------------------------------------------------------------- commands


class Bounded:
    """Keeps the head and the tail of a stream, and says how much was cut."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = KEEP_HEAD - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > KEEP_TAIL:
            cut = len(self.tail) - KEEP_TAIL
            self.dropped += cut
            del self.tail[:cut]

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes of output truncated ...]\n{tail}"
        return head + tail


class Command:
    def __init__(self, proc: subprocess.Popen, timeout: float) -> None:
        self.proc = proc
        self.timeout = timeout
        self.out = Bounded()
        self.err = Bounded()
        self.listeners: list[asyncio.Queue] = []
        self.exit_code: int | None = None
        self.timed_out = False
        self.killed = False
        self.done = asyncio.Event()

    def emit(self, event: dict) -> None:
        for queue in self.listeners:
            queue.put_nowait(event)

    def stop(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def final(self) -> dict:
        return {
            "t": "exit",
            "code": self.exit_code,
            "stdout": self.out.text(),
            "stderr": self.err.text(),
            "truncated": bool(self.out.dropped or self.err.dropped),
            "timed_out": self.timed_out,
            "killed": self.killed,
        }


class Daemon:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.commands: dict[int, Command] = {}
        self.warming: asyncio.Task | None = None

    async def spawn(self, argv_cmd: str, cwd: str, env: dict, timeout: float) -> Command:
        real_cwd = resolve(cwd or HOME)
        if not os.path.isdir(real_cwd):
            raise not_found(cwd)
        full_env = dict(self.config["env"])
        full_env.update(env)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, "runner", "--", "/bin/bash", "-lc", argv_cmd],
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=real_cwd,
            env=full_env,
            start_new_session=True,
        )
        os.close(out_w)
        os.close(err_w)
        command = Command(proc, timeout)
        self.commands[proc.pid] = command
        asyncio.get_running_loop().create_task(self._watch(command, out_r, err_r))
        return command

    async def _watch(self, command: Command, out_r: int, err_r: int) -> None:
        loop = asyncio.get_running_loop()
        readers = []
        for fd, kind, sink in ((out_r, "out", command.out), (err_r, "err", command.err)):
            finished = loop.create_future()
            os.set_blocking(fd, False)

            def readable(
                fd: int = fd, kind: str = kind, sink: Bounded = sink, fut=finished
            ) -> None:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                if not data:
                    loop.remove_reader(fd)
                    os.close(fd)
                    fut.set_result(None)
                    return
                sink.add(data)
                command.emit({"t": kind, "d": data.decode("utf-8", "replace")})

            loop.add_reader(fd, readable)
            readers.append(finished)
        exited = loop.create_future()
        pidfd = os.pidfd_open(command.proc.pid)

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            exited.set_result(command.proc.wait())

        loop.add_reader(pidfd, on_exit)
        try:
            await asyncio.wait_for(
                asyncio.shield(exited), command.timeout if command.timeout > 0 else None
            )
        except TimeoutError:
            command.timed_out = True
            command.stop()
        code = await exited
        await asyncio.gather(*readers)
        command.exit_code = code
        self.commands.pop(command.proc.pid, None)
        command.emit(command.final())
        command.done.set()

    async def handle_exec(self, req: dict, writer: asyncio.StreamWriter) -> None:
        command = await self.spawn(
            req["cmd"], req.get("cwd") or HOME, req.get("envs") or {}, float(req.get("timeout", 60))
        )
        queue: asyncio.Queue = asyncio.Queue()
        command.listeners.append(queue)
        await send(writer, {"t": "start", "pid": command.proc.pid})
        try:
            while True:
                event = await queue.get()
                await send(writer, event)
                if event["t"] == "exit":
                    return
        except (ConnectionError, OSError):
            command.listeners.remove(queue)  # a background command outlives its caller

    def handle_kill(self, req: dict) -> dict:
        command = self.commands.get(int(req["pid"]))
        if command is None or command.exit_code is not None:
            return {"killed": False}
        command.killed = True
        command.stop()
        return {"killed": True}

    async def handle_forward(self, req: dict, reader, writer) -> None:
        upstream = await connect_local(int(req["port"]))
        if upstream is None:
            writer.close()
            return
        await relay(reader, writer, *upstream)

    async def serve_client(self, reader: asyncio.StreamReader, writer) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            req = json.loads(line)
            op = req.get("op")
            if op == "forward":
                await self.handle_forward(req, reader, writer)
                return
            if op == "exec":
                try:
                    await self.handle_exec(req, writer)
                except PathError as error:
                    await send(writer, {"t": "error", "kind": error.kind, "message": str(error)})
                except OSError as error:  # fork or exec failed (a process limit): may pass
                    message = f"could not start the command: {error.strerror}"
                    await send(writer, {"t": "error", "kind": "spawn_failed", "message": message})
                return
            try:
                if op == "ping":
                    reply = {"ok": True, "pid": os.getpid()}
                elif op == "kill":
                    reply = self.handle_kill(req)
                elif op in FILE_OPS:
                    reply = FILE_OPS[op](req)
                else:
                    reply = {"error": "bad_request", "message": f"unknown op {op!r}"}
            except PathError as error:
                reply = error.reply()
            except OSError as error:
                name = error.filename if isinstance(error.filename, str) else None
                name = name or req.get("path") or HOME
                if isinstance(error, FileNotFoundError):
                    reply = not_found(name).reply()
                else:
                    reply = file_error(error, shown(name), action=op).reply()
            except Exception as error:  # a bug here: say so, rather than drop the connection
                reply = {"error": "internal", "message": f"envd failed on {op}: {error!r}"}
            await send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start_command(self) -> None:
        start = self.config.get("start_cmd")
        if start:
            command = await self.spawn(f"exec >/tmp/qai-start.log 2>&1; {start}", HOME, {}, 0)
            self.commands[command.proc.pid] = command
            if self.config.get("warm_url"):
                self.warming = asyncio.get_running_loop().create_task(
                    warm(self.config["warm_url"], command)
                )


async def warm(url: str, command: Command) -> None:
    """Request the app's first page until it answers 200, so it is compiled before anyone asks.

    Gives up when the start command exits or after WARM_SECONDS; the outcome goes to the start
    command's log, where `cat /tmp/qai-start.log` shows it next to the dev server's own lines.
    """
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no registry proxy

    def get() -> int:
        try:
            with direct.open(url, timeout=WARM_SECONDS) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (OSError, ValueError):
            return 0

    deadline = time.monotonic() + WARM_SECONDS
    status = 0
    while time.monotonic() < deadline and command.exit_code is None:
        status = await asyncio.to_thread(get)
        if status == 200:
            break
        await asyncio.sleep(0.2)
    with open("/tmp/qai-start.log", "a") as out:
        out.write(f"qai: warm-up request {url} answered {status or 'nothing'}\n")


async def send(writer: asyncio.StreamWriter, obj: dict) -> None:
    writer.write(json.dumps(obj).encode() + b"\n")
    await writer.drain()


async def connect_local(port: int) -> tuple | None:
    """Connect to 127.0.0.1:<port> inside; None when nothing listens (the host client sees EOF)."""
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        return None


async def proxy_client(reader, writer, target: str) -> None:
    try:
        up_r, up_w = await asyncio.open_unix_connection(target)
    except OSError:
        writer.close()
        return
    await relay(reader, writer, up_r, up_w)


def drop_privileges() -> None:
    """Become the sandbox user, and keep sandbox processes (same uid) from ptracing envd or
    opening its inherited fds through /proc, such as the host log its stdout points to."""
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(GID)
        os.setuid(UID)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("envd: could not drop root")
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


async def main(config_path: str) -> None:
    with open(config_path) as fh:
        config = json.load(fh)
    drop_privileges()
    os.umask(0o022)
    daemon = Daemon(config)
    import socket

    listener = socket.socket(fileno=config["listen_fd"])  # made and bound by the supervisor
    server = await asyncio.start_unix_server(
        daemon.serve_client, sock=listener, limit=256 * 1024 * 1024
    )
    if config.get("proxy_socket"):
        host, port = config["proxy_listen"].split(":")
        target = config["proxy_socket"]
        await asyncio.start_server(lambda r, w: proxy_client(r, w, target), host, int(port))
    os.write(config["ready_fd"], b"ready\n")
    os.close(config["ready_fd"])
    await daemon.start_command()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
