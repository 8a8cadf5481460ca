"""Which requests reach the app at all: a known Host, and no state change from another site.

A Host the operator did not configure means DNS rebinding (an attacker's name resolved to our
address) or a mistake: 421, whatever the path. An unsafe method whose `Origin` or
`Sec-Fetch-Site` shows another site (a page the operator visits, a preview's JavaScript) is 403,
token or not. Every answer forbids framing, so no other page can clickjack the UI.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
OPEN_PATHS = frozenset({"/metrics", "/healthz"})
"""Read by scrapers and probes under an internal name (`api:8000`, a pod IP); they hold no data
of any project."""
SECURITY_HEADERS = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def host_name(host: str) -> str:
    """`Example.com:8000` -> `example.com`, `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class SiteGuardMiddleware:
    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str], public_origin: str | None):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.public_origin = public_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        path: str = scope["path"]
        if path not in OPEN_PATHS and host_name(host) not in self.allowed_hosts:
            await _refuse(send, 421, "this server does not answer to that host name")
            return
        if scope["method"] not in SAFE_METHODS and self._cross_site(headers, host):
            await _refuse(send, 403, "a request from another site may not change anything here")
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message["headers"] = list(message.get("headers", [])) + added
            await send(message)

        await self.app(scope, receive, with_headers)

    def _cross_site(self, headers: dict[str, str], host: str) -> bool:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in {"same-origin", "none"}:
            return True
        origin = headers.get("origin")
        if origin is None:
            return False  # not a browser's cross-site request (curl, the CLI, old browsers)
        if origin == "null":  # a sandboxed frame, a redirect chain, a data: page
            return True
        if self.public_origin and origin.rstrip("/") == self.public_origin:
            return False
        return urlsplit(origin).netloc.lower() != host.strip().lower()


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
