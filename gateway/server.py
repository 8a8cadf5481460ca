"""The preview gateway: `http://<project_id>.preview.localhost:8080/` reaches that project's
current sandbox, over HTTP and websockets, whichever sandbox and host that is today.

It reads a connection's first request head, looks up the project's preview row, and relays the
connection's bytes from then on (so hot-reload websockets and streaming work unchanged):
- to the sandbox itself when this host holds it (or it is an E2B sandbox, reachable anywhere);
- to the gateway of the host that holds it, otherwise (one hop, marked so it never loops).
A project with no running sandbox (expired, killed, hibernated, or its host gone) gets one
through its project workflow, and the visitor a "Starting your preview…" page meanwhile.
Traffic is recorded, batched, so a quiet preview can hibernate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.service import RPCError

from contract import WakePreview
from gateway import pages
from runtime import metrics
from runtime.logs import get_logger
from runtime.preview_urls import host_pattern, project_from_host, url_template
from runtime.settings import Settings
from sandboxes.local.envd import pipe
from storage import previews
from storage.db import Database
from storage.models import Project
from submission import signal_project

log = get_logger("qai.gateway")

HOP_HEADER = b"x-qai-gateway-hop"
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
WAKE_AGAIN_SECONDS = 10.0
"""A project is signalled at most this often while its preview starts."""


async def count_previews(db: Database, host_id: str) -> None:
    """Set the hibernated-sandboxes gauge from this host's preview rows (each scrape)."""
    async with db.session() as session:
        states = await previews.count_by_state(session, host_id)
    metrics.SANDBOXES.labels("hibernated").set(states.get(previews.PreviewState.HIBERNATED, 0))


def _metrics_response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Type: {metrics.CONTENT_TYPE_LATEST}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GatewayError(RuntimeError):
    """The gateway cannot serve (its port is taken)."""


@dataclass(frozen=True)
class RequestHead:
    """The first request of a connection: its request line and headers, as received."""

    lines: list[bytes]

    @classmethod
    def parse(cls, raw: bytes) -> RequestHead:
        return cls(raw[: -len(b"\r\n\r\n")].split(b"\r\n"))

    def header(self, name: bytes) -> bytes | None:
        for line in self.lines[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name:
                return value.strip()
        return None

    def render(self, *, set_headers: dict[bytes, bytes] | None = None) -> bytes:
        """The head again, with `set_headers` replacing (or added to) its headers."""
        wanted = dict(set_headers or {})
        lines = [self.lines[0]]
        for line in self.lines[1:]:
            key = line.partition(b":")[0].strip().lower()
            if key in wanted:
                continue
            lines.append(line)
        lines += [name + b": " + value for name, value in wanted.items()]
        return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int
    tls: bool
    rewrite_host: bool
    """E2B's edge routes by `Host`: the request must name the sandbox's own host."""


def upstream_for(target: str) -> Upstream:
    parts = urlsplit(target)
    tls = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    return Upstream(
        host=host,
        port=parts.port or (443 if tls else 80),
        tls=tls,
        rewrite_host=host not in {"127.0.0.1", "localhost", "::1"},
    )


def is_local_target(target: str) -> bool:
    """A sandbox relayed on its host's loopback (local backend): only that host reaches it."""
    return not upstream_for(target).rewrite_host


class Traffic:
    """Projects whose previews are in use, written to their rows in batches.

    In use: bytes moved, or an HTTP connection is open (a page may be waiting for the dev
    server to compile, which sends nothing for seconds). An open websocket alone, such as an
    idle tab's hot-reload socket, does not count: a forgotten tab must not keep a sandbox up.
    """

    def __init__(self, db: Database, interval: float) -> None:
        self._db = db
        self.interval = interval
        self._seen: set[uuid.UUID] = set()
        self._open: dict[uuid.UUID, int] = {}
        self._task: asyncio.Task[None] | None = None

    def mark(self, project_id: uuid.UUID) -> None:
        self._seen.add(project_id)

    @contextlib.contextmanager
    def request_open(self, project_id: uuid.UUID) -> Iterator[None]:
        self._open[project_id] = self._open.get(project_id, 0) + 1
        try:
            yield
        finally:
            self._open[project_id] -= 1
            if not self._open[project_id]:
                del self._open[project_id]

    async def flush(self) -> None:
        if not self._seen and not self._open:
            return
        seen, self._seen = self._seen | set(self._open), set()
        try:
            async with self._db.session() as session:
                await previews.touch(session, sorted(seen))
                await session.commit()
        except (SQLAlchemyError, OSError) as error:
            log.warning("preview traffic not recorded", error=str(error))
            self._seen |= seen

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="preview-traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class PreviewGateway:
    def __init__(self, settings: Settings, db: Database, temporal: Client) -> None:
        self._settings = settings
        self._db = db
        self._temporal = temporal
        self._pattern = host_pattern(settings)
        self._host_id = settings.host_id
        idle = settings.qai_preview_idle_seconds
        self.traffic = Traffic(db, interval=min(max(idle / 4, 0.5), 10.0) if idle else 10.0)
        self._woken: dict[uuid.UUID, float] = {}
        self._open: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the visitor or the sandbox hung up: nothing to tell anyone
        finally:
            self._open.discard(writer)
            writer.close()

    def close_connections(self) -> None:
        """Hang up on every visitor (stopping): relays end as their ends close."""
        for writer in list(self._open):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
            return
        head = RequestHead.parse(raw)
        host = (head.header(b"host") or b"").decode("latin-1")
        project_id = project_from_host(self._pattern, host)
        watch = metrics.Stopwatch()
        if project_id is None and head.lines[0].split(b" ")[1:2] == [b"/metrics"]:
            await metrics.refreshed(lambda: count_previews(self._db, self._host_id))
            await _answer(writer, _metrics_response(await metrics.metrics_text()))
            return
        if project_id is None:
            _observe(watch, "not_found")
            await _answer(writer, pages.not_found("This address names no project's preview."))
            return
        forwarded = head.header(HOP_HEADER) is not None
        try:
            async with self._db.session() as session:
                row = await previews.get(session, project_id)
                exists = row is not None or await session.get(Project, project_id) is not None
        except (SQLAlchemyError, OSError) as error:
            log.warning("preview lookup failed", error=str(error))
            _observe(watch, "error")
            await _answer(writer, pages.starting())
            return
        if not exists:
            _observe(watch, "not_found")
            await _answer(writer, pages.not_found("There is no project at this address."))
            return
        if row is None or row.state != previews.PreviewState.LIVE:
            await self._reviving(writer, watch, project_id, None)
            return
        websocket = head.header(b"upgrade") is not None
        if is_local_target(row.target) and row.host_id != self._host_id:
            if forwarded:  # moved while the first gateway looked: let the visitor retry
                _observe(watch, "reviving")
                await _answer(writer, pages.starting())
                return
            host_name, _, port = row.host_address.rpartition(":")
            upstream = Upstream(host=host_name, port=int(port), tls=False, rewrite_host=False)
            outgoing = head.render(set_headers={HOP_HEADER: b"1"})
            unreachable: str | None = row.host_id
        else:
            upstream = upstream_for(row.target)
            outgoing = raw
            if upstream.rewrite_host:
                changes = {b"host": upstream.host.encode()}
                if not websocket:  # one request per connection: each names the sandbox
                    changes[b"connection"] = b"close"
                outgoing = head.render(set_headers=changes)
            unreachable = None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    upstream.host,
                    upstream.port,
                    ssl=ssl.create_default_context() if upstream.tls else None,
                    server_hostname=upstream.host if upstream.tls else None,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError):
            await self._reviving(writer, watch, project_id, unreachable)
            return
        _observe(watch, "forwarded" if unreachable else "proxied")
        self._woken.pop(project_id, None)  # reached: a later loss asks again at once
        self.traffic.mark(project_id)
        up_writer.write(outgoing)
        in_use = contextlib.nullcontext() if websocket else self.traffic.request_open(project_id)
        with in_use:
            await self._relay(project_id, reader, writer, up_reader, up_writer, websocket)

    async def _relay(
        self,
        project_id: uuid.UUID,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        websocket: bool,
    ) -> None:
        """Relay both ways (half-closes kept, so websockets work); a sandbox that hangs up before
        answering the first request (stopped mid-request, or being replaced) gets the visitor
        the starting page, which retries, instead of a browser error page that never does."""

        def mark() -> None:
            self.traffic.mark(project_id)

        abort = asyncio.Event()
        sending = asyncio.ensure_future(pipe(reader, up_writer, abort, mark))
        try:
            try:
                first = await up_reader.read(65536)
            except (ConnectionError, OSError):
                first = b""
            if not first:
                if not websocket:
                    await _answer(writer, pages.starting())
                return
            mark()
            writer.write(first)
            await writer.drain()
            answering = asyncio.ensure_future(pipe(up_reader, writer, abort, mark))
            both = asyncio.gather(sending, answering)
            # Cancelled below when one side resets: that outcome needs no one to read it.
            both.add_done_callback(lambda done: done.cancelled() or done.exception())
            aborted = asyncio.ensure_future(abort.wait())
            try:
                await asyncio.wait({both, aborted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                aborted.cancel()
                answering.cancel()
        finally:
            sending.cancel()
            writer.close()
            up_writer.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sending

    async def _reviving(
        self,
        writer: asyncio.StreamWriter,
        watch: metrics.Stopwatch,
        project_id: uuid.UUID,
        unreachable_host: str | None,
    ) -> None:
        """No running sandbox answers: ask for one, and show the visitor the starting page."""
        await self._wake(project_id, unreachable_host)
        _observe(watch, "reviving")
        await _answer(writer, pages.starting())

    async def _wake(self, project_id: uuid.UUID, unreachable_host: str | None) -> None:
        """Ask the project's workflow for a running sandbox (at most every few seconds)."""
        now = time.monotonic()
        if now - self._woken.get(project_id, -WAKE_AGAIN_SECONDS) < WAKE_AGAIN_SECONDS:
            return
        # Forget projects asked long ago, so the map holds only previews starting now.
        for stale in [p for p, at in self._woken.items() if now - at >= WAKE_AGAIN_SECONDS]:
            del self._woken[stale]
        self._woken[project_id] = now
        try:
            await signal_project(
                self._temporal,
                self._settings,
                project_id,
                "wake",
                WakePreview(unreachable_host=unreachable_host),
            )
            log.info("preview revival requested", project_id=str(project_id))
        except (RPCError, OSError) as error:  # Temporal down: the page retries, and so do we
            self._woken.pop(project_id, None)
            log.warning("preview revival not requested", error=str(error))


def _observe(watch: metrics.Stopwatch, outcome: str) -> None:
    """Until the gateway answered, or reached the preview (a relay's own life not included)."""
    metrics.GATEWAY_REQUEST_SECONDS.labels(outcome).observe(watch.seconds)


async def _answer(writer: asyncio.StreamWriter, response: bytes) -> None:
    writer.write(response)
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


@asynccontextmanager
async def running_gateway(settings: Settings, db: Database, temporal: Client) -> AsyncIterator[str]:
    """Serve previews for the block's duration; yields the gateway's base URL."""
    gateway = PreviewGateway(settings, db, temporal)
    try:
        server = await asyncio.start_server(
            gateway.handle, settings.qai_preview_host, settings.qai_preview_port, limit=MAX_HEAD
        )
    except OSError as error:
        raise GatewayError(
            f"the preview gateway could not listen on "
            f"{settings.qai_preview_host}:{settings.qai_preview_port}: {error.strerror}"
        ) from None
    gateway.traffic.start()
    try:
        yield url_template(settings).replace("{project_id}", "<project id>")
    finally:
        server.close()
        gateway.close_connections()
        await gateway.traffic.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
