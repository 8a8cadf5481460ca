"""The host-side HTTP(S) proxy of `registry` network mode: package registries only.

The sandbox has no network of its own; envd relays 127.0.0.1:3128 inside to this proxy's
unix socket.
Only CONNECT (and plain-HTTP requests) to the allowed (host, port) pairs go out, so the host's
loopback services and the rest of the internet stay unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from urllib.parse import urlsplit

from runtime.relay import relay

MAX_HEAD = 16 * 1024


def allowed_from_urls(urls: Iterable[str]) -> set[tuple[str, int]]:
    allowed = set()
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname:
            default = 443 if parts.scheme == "https" else 80
            allowed.add((parts.hostname.lower(), parts.port or default))
    return allowed


class RegistryProxy:
    def __init__(self, allowed: set[tuple[str, int]], log: object = print) -> None:
        self.allowed = allowed
        self.log = log

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        first, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = first.decode("latin-1").split(" ")
        except ValueError:
            await self._refuse(writer, 400, "malformed request line")
            return
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 0
            path_head = b""
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                await self._refuse(writer, 400, "the proxy needs an absolute http:// URL")
                return
            host, port = parts.hostname, parts.port or 80
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            headers = [
                h
                for h in rest.split(b"\r\n")
                if h and not h.lower().startswith((b"proxy-connection:", b"connection:"))
            ]
            path_head = b"\r\n".join(
                [f"{method} {path} {version}".encode(), *headers, b"Connection: close", b"", b""]
            )
        host = host.strip("[]").lower()
        if (host, port) not in self.allowed:
            self.log(f"proxy: refused {host}:{port}")
            await self._refuse(writer, 403, f"{host}:{port} is not a package registry allowed here")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 15)
        except (OSError, TimeoutError) as error:
            await self._refuse(writer, 502, f"cannot reach {host}:{port}: {error}")
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(path_head)
        await relay(reader, writer, up_reader, up_writer)

    async def _refuse(self, writer: asyncio.StreamWriter, code: int, message: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[code]
        body = (message + "\n").encode()
        writer.write(
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()
