"""Limits on what clients may send: the body size, and how often they may submit messages."""

from __future__ import annotations

import json
import math
import time
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024
GIT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""For git's fetch negotiation (`/git/...`): a clone with many local commits sends many `have`s."""


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """413 for a body over MAX_BODY_BYTES, by Content-Length or by counting a chunked body."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = GIT_MAX_BODY_BYTES if scope["path"].startswith("/git/") else self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        words = f"the request body is larger than {limit // 1024} KB"
        body = json.dumps({"detail": words}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A sliding window per client: at most `limit` submissions in any `period` seconds."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds the client must wait, or None when it may submit now (and that counts)."""
        now = time.monotonic() if now is None else now
        window = self._seen.setdefault(client, deque())
        while window and now - window[0] >= self.period:
            window.popleft()
        if len(window) >= self.limit:
            return max(1, math.ceil(self.period - (now - window[0])))
        window.append(now)
        return None
