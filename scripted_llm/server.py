"""An OpenAI-compatible model server that replays a script, for tests and the offline demo.

It is a real HTTP server speaking Chat Completions, so the code under test uses the
real `openai` client. Replies are chosen statelessly from each request (conversation
by the first user message, turn by the number of assistant messages), so retries and
concurrent runs behave like a deterministic model. Only fault injection counts
attempts, per (conversation, turn).

Run it: `python -m scripted_llm.server --script FILE [--host H] [--port P] [--delay S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from scripted_llm import protocol
from scripted_llm.script import Conversation, Fault, Script, ScriptError, Turn, load_script

log = logging.getLogger("scripted_llm")

TurnKey = tuple[str, int | None]
"""(conversation name, turn index); the turn is None for title requests."""

NO_CONVERSATION = "(none)"


@dataclasses.dataclass
class RequestRecord:
    """One request the server received, as tests see it."""

    seq: int
    kind: str  # "turn", "title" or "invalid"
    conversation: str | None
    turn: int | None
    attempt: int
    thread: str
    model: str | None
    stream: bool
    message_count: int
    fault: str | None = None
    status: int | None = None  # None while in flight, or when the client went away
    completed: bool = False
    cancelled: bool = False
    error: str | None = None
    images: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The request's `image_url` parts (`protocol.image_parts`): type, bytes, dimensions."""
    prompt_tokens: int | None = None
    """The request's size as the server counts it (messages and tools, characters / 4)."""
    max_tokens: int | None = None
    cached_tokens: int | None = None
    shared_prefix: float | None = None
    """Share of this request's messages (as JSON text) equal to the start of the thread's
    previous request's: what a provider's prompt cache could reuse."""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    """The usage the reply reported (a scripted `usage`, or the estimate)."""
    messages: list[Any] = dataclasses.field(default_factory=list, repr=False)

    def to_json(self, with_messages: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_messages:
            data.pop("messages")
        return data


class _ErrorReply(Exception):
    """Ends a request with an OpenAI-shaped error body."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = protocol.error_body(self.message, self.error_type, self.code)
        return web.json_response(body, status=self.status, headers=self.headers)


class ScriptedModel:
    """The replay logic and bookkeeping, independent of how the server is started."""

    def __init__(self, script: Script, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self._named = script.named_conversations()
        self._attempts: Counter[TurnKey] = Counter()
        self._completed: Counter[TurnKey] = Counter()
        self._log: list[RequestRecord] = []
        self._changed = asyncio.Event()
        self._last_prompt: dict[str, str] = {}
        """Per thread, the messages (as JSON text) of its last answered turn request."""

    # Bookkeeping -------------------------------------------------------------

    def requests(self) -> list[RequestRecord]:
        return list(self._log)

    def completed_counts(self) -> dict[TurnKey, int]:
        return dict(self._completed)

    def reset(self) -> None:
        self._last_prompt.clear()
        self._attempts.clear()
        self._completed.clear()
        self._log.clear()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self, predicate: Callable[[list[RequestRecord]], bool]
    ) -> list[RequestRecord]:
        """Wait until `predicate(log)` holds; wrap it in `asyncio.timeout`."""
        while True:
            changed = self._changed
            log = self.requests()
            if predicate(log):
                return log
            await changed.wait()

    # Selection ---------------------------------------------------------------

    def conversation_for(self, first_user: str) -> tuple[str, Conversation] | None:
        text = first_user.casefold()
        for name, conversation in self._named:
            if conversation.match is not None and conversation.match.casefold() in text:
                return name, conversation
        if self.script.default is not None:
            return self._named[-1]
        return None

    # Handling ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        record: RequestRecord | None = None
        try:
            body = await _json_body(request)
            self._check_key(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _ErrorReply(400, "'messages' must be a non-empty array.", code=None)
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise _ErrorReply(400, "'model' must be a non-empty string.")
            stream = bool(body.get("stream"))
            first_user = protocol.first_user_text(messages)
            thread = hashlib.sha256(first_user.encode()).hexdigest()[:12]
            is_title = not body.get("tools")
            chosen = self.conversation_for(first_user)
            name = chosen[0] if chosen else NO_CONVERSATION
            turn_index = None if is_title else protocol.count_assistant_messages(messages)
            key: TurnKey = (name, turn_index)
            self._attempts[key] += 1
            attempt = self._attempts[key]
            record = RequestRecord(
                seq=len(self._log) + 1,
                kind="title" if is_title else "turn",
                conversation=name if chosen else None,
                turn=turn_index,
                attempt=attempt,
                thread=thread,
                model=model,
                stream=stream,
                message_count=len(messages),
                messages=messages,
            )
            self._log.append(record)
            self._notify()
            self._check_images(record, messages)
            response = await self._reply(request, record, body, chosen, thread)
            record.status = response.status
            record.completed = response.status == 200
            if record.completed:
                self._completed[key] += 1
            log.info(
                "%s %s turn=%s attempt=%s -> %s%s",
                record.kind,
                name,
                turn_index,
                attempt,
                response.status,
                f" ({record.fault})" if record.fault else "",
            )
            return response
        except _ErrorReply as error:
            if record is None:
                record = self._invalid_record(error)
            record.status = error.status
            record.error = error.message
            log.info(
                "%s %s turn=%s attempt=%s -> %s %s",
                record.kind,
                record.conversation,
                record.turn,
                record.attempt,
                error.status,
                error.message,
            )
            return error.response()
        except (asyncio.CancelledError, ConnectionResetError):
            if record is not None:
                record.cancelled = True
                record.error = "the client closed the connection before the reply was sent"
            raise
        finally:
            self._notify()

    def _invalid_record(self, error: _ErrorReply) -> RequestRecord:
        record = RequestRecord(
            seq=len(self._log) + 1,
            kind="invalid",
            conversation=None,
            turn=None,
            attempt=1,
            thread="",
            model=None,
            stream=False,
            message_count=0,
        )
        self._log.append(record)
        return record

    def _check_images(self, record: RequestRecord, messages: list[Any]) -> None:
        """Record the image parts; refuse them as a provider does (bad data, no vision)."""
        try:
            record.images = protocol.image_parts(messages)
        except ValueError as error:
            raise _ErrorReply(400, str(error), code="invalid_image") from None
        if record.images and record.model in self.script.text_only_models:
            raise _ErrorReply(400, protocol.IMAGES_REFUSED)

    def _check_key(self, request: web.Request) -> None:
        expected = self.script.require_api_key
        if expected is None:
            return
        header = request.headers.get("Authorization", "")
        if header != f"Bearer {expected}":
            raise _ErrorReply(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    async def _reply(
        self,
        request: web.Request,
        record: RequestRecord,
        body: dict[str, Any],
        chosen: tuple[str, Conversation] | None,
        thread: str,
    ) -> web.StreamResponse:
        conversation = chosen[1] if chosen else None
        if record.kind == "title":
            faults = (conversation.title_faults if conversation else []) or self.script.title_faults
            turn: Turn | None = None
        else:
            if conversation is None:
                raise _ErrorReply(
                    400,
                    "Scripted model: no conversation matches the first user message "
                    f"(it starts {protocol.first_user_text(body['messages'])[:80]!r}) and the "
                    "script has no `default` conversation.",
                    code="scripted_no_match",
                )
            turn = self._turn(record, conversation)
            faults = turn.faults
        fault = faults[record.attempt - 1] if record.attempt <= len(faults) else None
        record.fault = fault.describe() if fault else None

        delay = self.delay + self.script.delay + (turn.delay if turn else 0.0)
        delay += fault.delay if fault else 0.0
        if delay:
            await asyncio.sleep(delay)
        record.prompt_tokens = protocol.prompt_tokens(body)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        record.max_tokens = max_tokens if isinstance(max_tokens, int) else None
        if fault is not None and fault.status is not None:
            raise _fault_error(fault)
        window = self.script.context_tokens
        if window is not None and record.prompt_tokens + (record.max_tokens or 0) > window:
            raise _ErrorReply(
                400,
                protocol.context_length_message(
                    window, record.prompt_tokens, record.max_tokens or 0
                ),
                code="context_length_exceeded",
            )

        completion = self._completion(record, body, conversation, turn, fault, thread)
        record.finish_reason = completion["choices"][0]["finish_reason"]
        record.usage = completion["usage"]
        if record.stream:
            return await _stream(request, completion, body)
        response = web.json_response(completion)
        await response.prepare(request)
        await response.write_eof()
        return response

    def _turn(self, record: RequestRecord, conversation: Conversation) -> Turn:
        assert record.turn is not None
        turns = conversation.turns
        if record.turn < len(turns):
            return turns[record.turn]
        if conversation.after_last == "repeat":
            return turns[-1]
        raise _ErrorReply(
            400,
            f"Scripted model: conversation {record.conversation!r} has {len(turns)} turns and "
            f"this request asks for turn {record.turn + 1} (after_last is 'error').",
            code="scripted_script_exhausted",
        )

    def _completion(
        self,
        record: RequestRecord,
        body: dict[str, Any],
        conversation: Conversation | None,
        turn: Turn | None,
        fault: Fault | None,
        thread: str,
    ) -> dict[str, Any]:
        prompt_tokens = record.prompt_tokens or protocol.prompt_tokens(body)
        if turn is None:
            title = (conversation.title if conversation else None) or self.script.title
            return protocol.completion_body(
                completion_id=f"chatcmpl-{thread}-title",
                model=record.model or "scripted",
                content=title,
                tool_calls=[],
                finish_reason="stop",
                usage=protocol.usage_body(prompt_tokens, protocol.estimate_tokens(title)),
            )
        assert record.turn is not None
        ids = [
            f"call_{thread}_{record.turn}_{i}" if c.id is None else c.id
            for i, c in enumerate(turn.tool_calls)
        ]
        calls = protocol.tool_calls_body(
            turn.tool_calls, ids, malformed_args=bool(fault and fault.malformed_arguments)
        )
        content, cut = turn.content, False
        if record.max_tokens:  # a reply longer than max_tokens is cut there, as providers do
            content, calls, cut = protocol.truncate_output(content, calls, record.max_tokens)
        text = json.dumps(body["messages"])
        cached = protocol.cached_tokens(self._last_prompt.get(thread), text)
        previous = self._last_prompt.get(thread)
        if previous is not None:
            record.shared_prefix = protocol.shared_prefix_chars(previous, text) / max(1, len(text))
        self._last_prompt[thread] = text
        if turn.usage is not None:
            usage = protocol.usage_body(
                turn.usage.prompt_tokens,
                turn.usage.completion_tokens,
                turn.usage.cached_tokens if turn.usage.cached_tokens is not None else cached,
            )
        else:
            produced = (content or "") + "".join(c["function"]["arguments"] for c in calls)
            usage = protocol.usage_body(prompt_tokens, protocol.estimate_tokens(produced), cached)
        record.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"]
        finish = "length" if cut else turn.finish_reason or ("tool_calls" if calls else "stop")
        return protocol.completion_body(
            completion_id=f"chatcmpl-{thread}-{record.turn}",
            model=record.model or "scripted",
            content=content,
            tool_calls=calls,
            finish_reason=finish,
            usage=usage,
        )


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _ErrorReply(
            400, "We could not parse the JSON body of your request.", code=None
        ) from None
    if not isinstance(body, dict):
        raise _ErrorReply(400, "The request body must be a JSON object.")
    return body


def _fault_error(fault: Fault) -> _ErrorReply:
    assert fault.status is not None
    return _ErrorReply(
        fault.status,
        fault.error_message(),
        error_type=fault.error_type(),
        code=fault.code,
        headers=protocol.fault_headers(fault),
    )


async def _stream(
    request: web.Request, completion: dict[str, Any], body: dict[str, Any]
) -> web.StreamResponse:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for chunk in protocol.stream_chunks(completion, include_usage):
        await response.write(protocol.sse(chunk))
    await response.write(protocol.sse("[DONE]"))
    await response.write_eof()
    return response


def build_app(model: ScriptedModel) -> web.Application:
    """The aiohttp application: the OpenAI routes under /v1 and test routes under /_scripted."""

    async def completions(request: web.Request) -> web.StreamResponse:
        return await model.handle(request)

    async def models(_: web.Request) -> web.Response:
        return web.json_response(protocol.models_body(model.script.models))

    async def one_model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in model.script.models:
            return _ErrorReply(
                404, f"The model '{name}' does not exist.", code="model_not_found"
            ).response()
        return web.json_response(protocol.model_body(name))

    async def unknown(request: web.Request) -> web.Response:
        return _ErrorReply(
            404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
        ).response()

    async def requests(request: web.Request) -> web.Response:
        with_messages = request.query.get("messages") in {"1", "true", "yes"}
        return web.json_response(
            {
                "requests": [r.to_json(with_messages) for r in model.requests()],
                "completed": _counts_json(model.completed_counts()),
            }
        )

    async def completed(_: web.Request) -> web.Response:
        return web.json_response({"completed": _counts_json(model.completed_counts())})

    async def reset(_: web.Request) -> web.Response:
        model.reset()
        return web.json_response({"reset": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name}", one_model)
    app.router.add_get("/_scripted/requests", requests)
    app.router.add_get("/_scripted/completed", completed)
    app.router.add_post("/_scripted/reset", reset)
    app.router.add_route("*", "/v1/{tail:.*}", unknown)
    return app


def _counts_json(counts: dict[TurnKey, int]) -> list[dict[str, Any]]:
    return [
        {"conversation": name, "turn": turn, "count": count}
        for (name, turn), count in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1))
    ]


class ScriptedLLMServer:
    """A running scripted model server; `base_url` is what OPENAI_BASE_URL should be."""

    def __init__(
        self,
        script: Path | str | dict[str, Any] | Script,
        *,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        base_dir: Path | None = None,
        context_tokens: int | None = None,
    ) -> None:
        loaded = load_script(script, base_dir)
        if context_tokens is not None:
            loaded = loaded.model_copy(update={"context_tokens": context_tokens})
        self.model = ScriptedModel(loaded, delay)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        if self.port == 0:
            raise RuntimeError("the scripted model server has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.model), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OSError(
                f"scripted model server cannot listen on {self.host}:{self.port}: "
                f"{error.strerror or error}"
            ) from None
        self._runner = runner
        sockets = runner.addresses
        self.port = int(sockets[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def requests(self) -> list[RequestRecord]:
        return self.model.requests()

    def completed_counts(self) -> dict[TurnKey, int]:
        return self.model.completed_counts()

    async def wait_for(
        self, predicate: Callable[[list[RequestRecord]], bool]
    ) -> list[RequestRecord]:
        """Wait until `predicate(requests)` holds (a turn in flight, finished, ...).

        Wrap it in `asyncio.timeout` so a test that goes wrong fails instead of hanging.
        """
        return await self.model.wait_for(predicate)

    def reset(self) -> None:
        self.model.reset()


@contextlib.asynccontextmanager
async def scripted_llm_server(
    script: Path | str | dict[str, Any] | Script,
    *,
    delay: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 0,
    base_dir: Path | None = None,
) -> AsyncIterator[ScriptedLLMServer]:
    """Run a scripted model server for the duration of the block."""
    server = ScriptedLLMServer(script, delay=delay, host=host, port=port, base_dir=base_dir)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripted_llm",
        description="Serve an OpenAI-compatible model that replays a script.",
    )
    parser.add_argument("--script", required=True, type=Path, help="script JSON file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before every reply"
    )
    parser.add_argument(
        "--context-tokens",
        type=int,
        default=None,
        help="context window: larger requests get a 400 context_length_exceeded",
    )
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    return args


async def _serve(args: argparse.Namespace) -> None:
    server = ScriptedLLMServer(
        args.script,
        delay=args.delay,
        host=args.host,
        port=args.port,
        context_tokens=args.context_tokens,
    )
    await server.start()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except (ScriptError, OSError) as error:
        print(f"scripted_llm: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
