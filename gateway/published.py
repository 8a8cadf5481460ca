"""Published apps: `http://<project id>.app.localhost:<port>/` served straight from the blob store.

A static publication is files only (Next.js's export), so no process runs for it: the gateway
maps the request path to a stored file and answers it. Hashed assets under `/_next/static/`
are cached as immutable; pages revalidate, so a republish shows at once at the same URL. There
are no dev endpoints, no hot reload and no source maps (none are stored). The served build is
looked up per project at most every `ROW_TTL` seconds, so an unpublish answers 404 within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import time
import uuid
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import SQLAlchemyError

from gateway import pages
from runtime import metrics
from runtime.logs import get_logger
from runtime.preview_urls import project_from_host, publish_host_pattern
from runtime.settings import Settings
from storage import publications
from storage.blobs import BlobError, BlobStore, check_key
from storage.db import Database

if TYPE_CHECKING:
    from gateway.request import RequestHead

log = get_logger("qai.gateway.published")

ROW_TTL = 1.0
"""Seconds a project's served build is remembered between requests."""
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=0, must-revalidate"
TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".woff2": "font/woff2"}


def content_type(path: str) -> str:
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    kind = TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in {"application/json", "image/svg+xml"}:
        kind += "; charset=utf-8"
    return kind


def candidates(path: str) -> list[str]:
    """Stored files that may answer `path`, in Next.js export's layout (trailingSlash off)."""
    path = unquote(urlsplit(path).path).lstrip("/")
    if path == "" or path.endswith("/"):
        return [f"{path}index.html"]
    if "." in path.rsplit("/", 1)[-1]:
        return [path]
    return [f"{path}.html", f"{path}/index.html"]


def response(status: str, body: bytes, *, kind: str, cache: str, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {kind}",
        f"Content-Length: {len(body)}",
        f"Cache-Control: {cache}",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


class PublishedApps:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self._pattern = publish_host_pattern(settings)
        self._db = db
        self._blobs = blobs
        self._rows: dict[uuid.UUID, tuple[float, uuid.UUID | None]] = {}

    def project(self, host: str) -> uuid.UUID | None:
        return project_from_host(self._pattern, host)

    async def serve(self, head: RequestHead, writer: asyncio.StreamWriter) -> bool:
        """Answer the request when its host names a published app; False when it names none."""
        host = (head.header(b"host") or b"").decode("latin-1")
        project_id = self.project(host)
        if project_id is None:
            return False
        watch = metrics.Stopwatch()
        method, _, rest = head.lines[0].decode("latin-1").partition(" ")
        target = rest.rsplit(" ", 1)[0] if " " in rest else rest
        head_only = method == "HEAD"
        outcome, answer = await self._answer(project_id, method, target, head_only)
        metrics.GATEWAY_REQUEST_SECONDS.labels(outcome).observe(watch.seconds)
        writer.write(answer)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        return True

    async def _answer(
        self, project_id: uuid.UUID, method: str, target: str, head_only: bool
    ) -> tuple[str, bytes]:
        if method not in {"GET", "HEAD"}:
            body = b"Only GET and HEAD are served here.\n"
            return "not_found", response(
                "405 Method Not Allowed", body, kind="text/plain", cache="no-store", head_only=False
            )
        try:
            publication_id = await self._served(project_id)
        except (SQLAlchemyError, OSError) as error:
            log.warning("publication lookup failed", error=str(error))
            return "error", pages.not_found(
                "The app could not be found just now; reload.", "No app here"
            )
        if publication_id is None:
            return "not_found", pages.not_found(
                "No app is published at this address.", "No app here"
            )
        prefix = publications.blob_prefix(project_id, publication_id)
        try:
            for path in candidates(target):
                try:
                    data = await self._blobs.get(prefix + check_key(path))
                except ValueError:  # `..`, empty segments: names no stored file
                    continue
                if data is not None:
                    cache = IMMUTABLE if path.startswith("_next/static/") else REVALIDATE
                    return "published", response(
                        "200 OK", data, kind=content_type(path), cache=cache, head_only=head_only
                    )
            page = await self._blobs.get(prefix + "404.html")
        except BlobError as error:
            log.warning("published file unreadable", error=str(error))
            return "error", pages.not_found(
                "The app could not be read just now; reload.", "No app here"
            )
        if page is None:
            return "not_found", pages.not_found("This page does not exist.", "Not found")
        return "not_found", response(
            "404 Not Found",
            page,
            kind=content_type("404.html"),
            cache=REVALIDATE,
            head_only=head_only,
        )

    async def _served(self, project_id: uuid.UUID) -> uuid.UUID | None:
        now = time.monotonic()
        cached = self._rows.get(project_id)
        if cached is not None and now - cached[0] < ROW_TTL:
            return cached[1]
        async with self._db.session() as session:
            row = await publications.served(session, project_id)
        if len(self._rows) > 10_000:
            self._rows.clear()
        self._rows[project_id] = (now, row.id if row else None)
        return row.id if row else None
