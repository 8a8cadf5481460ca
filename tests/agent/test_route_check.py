"""The route check requests model-written routes: it must not be steerable by them.

A real HTTP server stands in for the preview (any route it serves is "model-written"); a second
one on loopback is the canary a redirect points at: it must see nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from activities import checks
from agent.checks import CheckStatus


async def _serve(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def canary() -> AsyncIterator[tuple[int, list[bytes]]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, port = await _serve(handle)
    async with server:
        yield port, seen


@pytest.fixture
async def preview(canary) -> AsyncIterator[str]:
    canary_port, _ = canary

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        path = line.split(" ")[1]
        try:
            if path == "/away":
                where = f"http://127.0.0.1:{canary_port}/secret"
                writer.write(f"HTTP/1.1 302 Found\r\nlocation: {where}\r\n\r\n".encode())
            elif path == "/inside":
                writer.write(
                    b"HTTP/1.1 307 Temporary\r\nlocation: /ok\r\ncontent-length: 0\r\n\r\n"
                )
            elif path == "/loop":
                writer.write(b"HTTP/1.1 302 Found\r\nlocation: /loop\r\ncontent-length: 0\r\n\r\n")
            elif path == "/endless":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\n")
                while True:  # no length, never ends
                    writer.write(b"<p>" + b"x" * 65536 + b"</p>")
                    await writer.drain()
            elif path == "/drip":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\n")
                while True:  # a byte well within each read's timeout, forever
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.05)
            else:
                body = b"<html>fine</html>"
                head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server, port = await _serve(handle)
    async with server:
        yield f"http://127.0.0.1:{port}"


def _sandbox(base: str) -> SimpleNamespace:
    async def run(command: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(stdout="0")

    return SimpleNamespace(preview_url=lambda port: base, commands=SimpleNamespace(run=run))


async def test_a_route_cannot_steer_the_worker(preview, canary, monkeypatch) -> None:
    _, seen = canary
    monkeypatch.setattr(checks, "ROUTE_MAX_BODY_BYTES", 1024 * 1024)
    monkeypatch.setattr(checks, "ROUTE_TIMEOUT_SECONDS", 2.0)
    routes = ["/away", "/inside", "/loop", "/endless", "/drip"]
    result = await asyncio.wait_for(checks.request_routes(_sandbox(preview), routes), 30)
    messages = [issue.message for issue in result.issues]
    assert seen == [], "the redirect off the preview's origin was followed"
    assert "GET /away redirected away from the preview" in messages
    assert not any(m.startswith("GET /inside") for m in messages)  # followed, answered 200
    assert "GET /loop redirected more than 5 times" in messages
    assert "GET /endless sent a body larger than 1 MB" in messages
    assert "GET /drip did not answer within 2 s" in messages
    assert result.status == CheckStatus.FAILED
    assert not any(str(canary[0]) in m for m in messages)  # the target is not echoed
