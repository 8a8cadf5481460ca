"""The supervisor's asyncio half: preview ports, the control socket, the registry proxy, expiry.

Imported only after bubblewrap is running, so envd starts while asyncio is still being imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import time
from typing import Any

from runtime.relay import relay
from sandboxes.local.layout import Layout, log, read_state, update_state
from sandboxes.local.proxy import RegistryProxy


class HostServers:
    def __init__(
        self, layout: Layout, state: dict[str, Any], bwrap_pid: int, ready_fd: int
    ) -> None:
        self.layout = layout
        self.ready_fd = ready_fd
        self.state = state
        self.bwrap_pid = bwrap_pid
        self.servers: list[asyncio.AbstractServer] = []
        self.reason = "unknown"

    def run(self) -> str:
        """Serve until the sandbox is killed, expires, or exits; returns why."""
        return asyncio.run(self._main())

    async def _main(self) -> str:
        self.stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.ready_fd, self._envd_ready)
        try:
            await self.start_servers()
            await self.watch()
        finally:
            for server in self.servers:
                server.close()
        return self.reason

    async def open_envd(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = self.layout.envd_sock
        mode = os.lstat(sock).st_mode  # the sandbox owns the directory: never follow a link
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{sock} is not a socket")
        return await asyncio.open_unix_connection(str(sock))

    async def forward(self, port: int, reader, writer) -> None:
        try:
            up_reader, up_writer = await self.open_envd()
        except OSError:
            writer.close()
            return
        up_writer.write(json.dumps({"op": "forward", "port": port}).encode() + b"\n")
        await relay(reader, writer, up_reader, up_writer)

    async def expose(self, port: int) -> int:
        ports = self.state.setdefault("ports", {})
        if str(port) in ports:
            return ports[str(port)]
        server = await asyncio.start_server(lambda r, w: self.forward(port, r, w), "127.0.0.1", 0)
        self.servers.append(server)
        host_port = server.sockets[0].getsockname()[1]
        ports[str(port)] = host_port
        update_state(self.layout.state, lambda s: s.setdefault("ports", {}).update(ports))
        log(f"port {port} exposed on 127.0.0.1:{host_port}")
        return host_port

    async def control(self, reader: asyncio.StreamReader, writer) -> None:
        try:
            words = (await reader.readline()).decode().split()
            if len(words) == 2 and words[0] == "expose" and words[1].isdigit():
                port = int(words[1])
                if not 1 <= port <= 65535:
                    raise ValueError(f"bad port {port}")
                writer.write(f"{await self.expose(port)}\n".encode())
            else:
                writer.write(b"error unknown request\n")
            await writer.drain()
        except (OSError, ValueError) as error:
            writer.write(f"error {error}\n".encode())
        finally:
            writer.close()

    async def start_servers(self) -> None:
        layout = self.layout
        with contextlib.suppress(FileNotFoundError):
            layout.ctl_sock.unlink()
        self.servers.append(await asyncio.start_unix_server(self.control, str(layout.ctl_sock)))
        os.chmod(layout.ctl_sock, 0o600)
        if self.state["network"] == "registry":
            allowed = {(h, int(p)) for h, p in self.state.get("registry_hosts", [])}
            proxy = RegistryProxy(allowed, log)
            path = layout.host_dir / "proxy.sock"
            self.servers.append(await asyncio.start_unix_server(proxy.handle, str(path)))
            os.chmod(path, 0o666)
        port = self.state.get("template_port")
        if port:
            await self.expose(int(port))

    # ------------------------------------------------------------ lifetime

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._stop, f"signal {signum}")
        pidfd = os.pidfd_open(self.bwrap_pid)
        loop.add_reader(pidfd, self._stop, "sandbox exited")
        while not self.stop.is_set():
            try:
                expires_at = read_state(self.layout.state)["expires_at"]
            except (OSError, ValueError, KeyError):
                self._stop("state file gone")
                break
            if time.time() >= expires_at:
                self._stop("expired")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)
        loop.remove_reader(pidfd)
        os.close(pidfd)

    def _envd_ready(self) -> None:
        asyncio.get_running_loop().remove_reader(self.ready_fd)
        said = os.read(self.ready_fd, 16)
        os.close(self.ready_fd)
        if said:
            self.layout.ready.touch()
            log("envd ready")
        else:
            log("envd exited before it was ready")

    def _stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.reason = reason
            self.stop.set()
