"""Limits on what clients may send: the body size, how often they may act, and how many event
streams they may hold open.

A client is the token's identity when the request carries the token, else its address. The
address is the TCP peer's, unless the peer is one of QAI_TRUSTED_PROXIES: only then does
uvicorn take it from X-Forwarded-For (see `api.server`), so nobody can pick their own bucket.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.image_files import MAX_IMAGE_BYTES, MAX_IMAGES

MAX_BODY_BYTES = 64 * 1024
MAX_SUBMISSION_BYTES = MAX_IMAGES * MAX_IMAGE_BYTES + MAX_BODY_BYTES
"""A multipart submission: four images at their limit, plus the prompt and the form's framing."""
SUBMISSION_ROUTES = re.compile(r"/api/projects(/[^/]+/messages)?/?")
"""The two routes that take images (`POST`, multipart/form-data); every other body: 64 KB."""


def body_limit(scope: Scope, default: int = MAX_BODY_BYTES) -> int:
    """The body limit of a request: larger only for git's fetch negotiation and for a
    multipart submission of images."""
    if scope.get("path", "").startswith("/git/"):
        return GIT_MAX_BODY_BYTES
    if scope.get("method") != "POST" or not SUBMISSION_ROUTES.fullmatch(scope.get("path", "")):
        return default
    headers = dict(scope.get("headers") or [])
    if not headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
        return default
    return MAX_SUBMISSION_BYTES


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
        limit = body_limit(scope, self.max_bytes)
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
        size = f"{limit // 1024} KB" if limit < 1024 * 1024 else f"{limit / 1024 / 1024:.1f} MB"
        body = json.dumps({"detail": f"the request body is larger than {size}"}).encode()
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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class RateLimiter:
    """A sliding window per client: at most `limit` requests in any `period` seconds.

    Clients idle for a whole period are forgotten (checked once a period), and at most
    `max_clients` are remembered, so the memory stays bounded whoever sends.
    """

    def __init__(self, limit: int, period: float, *, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.period = period
        self.max_clients = max_clients
        self._seen: dict[str, deque[float]] = {}
        self._pruned = time.monotonic()

    def __len__(self) -> int:
        return len(self._seen)

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds the client must wait, or None when it may act now (and that counts)."""
        now = time.monotonic() if now is None else now
        if now - self._pruned >= self.period or len(self._seen) >= self.max_clients:
            self.prune(now)
        window = self._seen.setdefault(client, deque())
        while window and now - window[0] >= self.period:
            window.popleft()
        if len(window) >= self.limit:
            return max(1, math.ceil(self.period - (now - window[0])))
        window.append(now)
        return None

    def prune(self, now: float) -> None:
        self._pruned = now
        for client in [c for c, w in self._seen.items() if not w or now - w[-1] >= self.period]:
            del self._seen[client]
        while len(self._seen) >= self.max_clients:  # all recent: drop the oldest-seen
            del self._seen[next(iter(self._seen))]


class TooManyStreams(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StreamSlots:
    """Open event streams: at most `per_client` per client and `total` in all."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._open: dict[str, int] = {}

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def take(self, client: str) -> None:
        if self.open >= self.total:
            raise TooManyStreams(f"this server has {self.total} event streams open; try later")
        if self._open.get(client, 0) >= self.per_client:
            raise TooManyStreams(f"you have {self.per_client} event streams open; close one first")
        self._open[client] = self._open.get(client, 0) + 1

    def give_back(self, client: str) -> None:
        left = self._open.get(client, 0) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)

    @contextmanager
    def held(self, client: str) -> Iterator[None]:
        self.take(client)
        try:
            yield
        finally:
            self.give_back(client)
