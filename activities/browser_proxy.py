"""A forward proxy that reaches one origin only: the check's browser sends everything through it.

The page in a browser check is model-written code. Chromium is told to send every request,
loopback included (`<-loopback>`), through this proxy, which connects to the preview's own
host and port and refuses everything else: the API, Temporal, PostgreSQL, metrics ports, other
previews, private and link-local addresses, the internet. This holds for every kind of request a
page can make (fetch, XHR, images, scripts, EventSource, beacons, WebSockets, navigations,
redirects), because it is where the connection is made, not a list of URL patterns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from agent.browser_checks import origin_of

HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
MAX_HEAD = 64 * 1024
REFUSED = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n"
    b"Connection: close\r\n\r\nOnly the preview's own origin is reachable.\n"
)
HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}


class OriginProxy:
    """Allows `origin` (scheme://host:port) only; None allows nothing."""

    def __init__(self, origin: str | None) -> None:
        self._allowed: tuple[str, int] | None = None
        self._tls = False
        if origin is not None:
            scheme, host, port = origin_of(origin)
            self._allowed = (host, port)
            self._tls = scheme == "https"
        self.refused: list[str] = []
        self.url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def _allows(self, host: str, port: int) -> bool:
        return self._allowed == (host.lower().strip("[]"), port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            lines = raw[:-4].split(b"\r\n")
            method, _, rest = lines[0].partition(b" ")
            target = rest.rpartition(b" ")[0].decode("latin-1")
            if method == b"CONNECT":
                host, _, port = target.rpartition(":")
                await self._tunnel(reader, writer, host, int(port or 0))
            else:
                await self._forward(reader, writer, method, target, lines[1:])
        except (ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, what: str) -> None:
        self.refused.append(what)
        writer.write(REFUSED)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        """CONNECT (https, and every WebSocket): a byte tunnel to the allowed host only."""
        if not self._allows(host, port):
            await self._refuse(writer, f"CONNECT {host}:{port}")
            return
        up_reader, up_writer = await self._open()
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await self._relay(reader, writer, up_reader, up_writer)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: bytes,
        target: str,
        headers: list[bytes],
    ) -> None:
        """A plain-HTTP request in absolute form, to the allowed origin only, one per
        connection (Chromium reuses proxy connections across hosts)."""
        parts = urlsplit(target)
        port = parts.port or 80
        if parts.scheme != "http" or self._tls or not self._allows(parts.hostname or "", port):
            await self._refuse(writer, f"{method.decode('latin-1')} {target}")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [h for h in headers if h.partition(b":")[0].strip().lower() not in HOP_HEADERS]
        head = b"\r\n".join(
            [method + b" " + path.encode("latin-1") + b" HTTP/1.1", *kept, b"Connection: close"]
        )
        up_reader, up_writer = await self._open()
        up_writer.write(head + b"\r\n\r\n")
        await self._relay(reader, writer, up_reader, up_writer)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self._allowed is not None
        host, port = self._allowed
        return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(ConnectionError, OSError):
                if sink.can_write_eof():
                    sink.write_eof()

        self._writers.add(up_writer)
        try:
            up = asyncio.ensure_future(pipe(reader, up_writer))
            down = asyncio.ensure_future(pipe(up_reader, writer))
            await down  # the upstream's answer is done: the connection is
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
        finally:
            self._writers.discard(up_writer)
            up_writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self.url
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
