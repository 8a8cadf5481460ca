"""The LLM client the activities use, and how its failures become Temporal errors.

The `openai` client never retries (`max_retries=0`): Temporal owns retries, so every
attempt is visible in history and honours Retry-After through `next_retry_delay`.
Errors that retrying cannot fix (bad key, unknown model, context too long) are
non-retryable and carry a message a user can act on.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from temporalio.exceptions import ApplicationError

from runtime.settings import Settings

PLACEHOLDER_API_KEY = "not-needed"
"""Sent when OPENAI_BASE_URL points at a server that needs no key (vLLM, Ollama, ...)."""

MAX_RETRY_AFTER = timedelta(minutes=10)
"""Longest Retry-After honoured; a larger value is clipped so a run cannot stall for hours."""

_PROVIDER_MESSAGE_LIMIT = 300

_CONTEXT_LENGTH = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many tokens|prompt is too long"
    r"|exceed_context_size|reduce the length of the messages",
    re.IGNORECASE,
)


class LLMErrorType(StrEnum):
    """`ApplicationError.type` of every classified LLM failure."""

    RATE_LIMITED = "LLMRateLimited"
    QUOTA_EXCEEDED = "LLMQuotaExceeded"
    AUTHENTICATION_FAILED = "LLMAuthenticationFailed"
    PERMISSION_DENIED = "LLMPermissionDenied"
    NOT_FOUND = "LLMNotFound"
    CONTEXT_LENGTH_EXCEEDED = "LLMContextLengthExceeded"
    BAD_REQUEST = "LLMBadRequest"
    UNAVAILABLE = "LLMUnavailable"
    TIMEOUT = "LLMTimeout"
    CONNECTION_FAILED = "LLMConnectionFailed"
    BAD_RESPONSE = "LLMBadResponse"
    NOT_CONFIGURED = "LLMNotConfigured"
    IMAGES_NOT_SUPPORTED = "LLMImagesNotSupported"
    UNEXPECTED = "LLMError"


NON_RETRYABLE_LLM_ERROR_TYPES: frozenset[str] = frozenset(
    {
        LLMErrorType.QUOTA_EXCEEDED,
        LLMErrorType.AUTHENTICATION_FAILED,
        LLMErrorType.PERMISSION_DENIED,
        LLMErrorType.NOT_FOUND,
        LLMErrorType.CONTEXT_LENGTH_EXCEEDED,
        LLMErrorType.BAD_REQUEST,
        LLMErrorType.NOT_CONFIGURED,
        LLMErrorType.IMAGES_NOT_SUPPORTED,
    }
)
"""Types that `classify_llm_error` always marks non-retryable (for RetryPolicy lists)."""


def make_openai_client(settings: Settings) -> openai.AsyncOpenAI:
    """An AsyncOpenAI client that never retries on its own and times out per settings.

    Raises a non-retryable ApplicationError (LLMNotConfigured) when there is neither
    an API key nor a base URL, so a run ends with a clear ERROR instead of looping.
    """
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    base_url = settings.openai_base_url or None
    if not key and base_url is None:
        raise ApplicationError(
            "No model is configured: set OPENAI_API_KEY (and optionally OPENAI_BASE_URL for an "
            "OpenAI-compatible server).",
            {"status_code": None},
            type=LLMErrorType.NOT_CONFIGURED,
            non_retryable=True,
        )
    return openai.AsyncOpenAI(
        api_key=key or PLACEHOLDER_API_KEY,
        base_url=base_url,
        timeout=settings.qai_llm_timeout,
        max_retries=0,
    )


async def chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Iterable[Mapping[str, Any]] | None = None,
    tool_choice: str | Mapping[str, Any] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    parallel_tool_calls: bool | None = None,
    request_timeout: float | None = None,
) -> ChatCompletion:
    """One non-streaming Chat Completions call; None arguments are left out of the request.

    Raises the `openai` exception unchanged (pass it to `classify_llm_error`), or a
    retryable LLMBadResponse ApplicationError when the reply has no choices.
    """
    options: dict[str, Any] = {}
    if tools:
        options["tools"] = list(tools)
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            options["parallel_tool_calls"] = parallel_tool_calls
    if temperature is not None:
        options["temperature"] = temperature
    if request_timeout is not None:  # shorter than the client's own, for optional calls
        options["timeout"] = request_timeout
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    completion = await client.chat.completions.create(
        model=model, messages=list(messages), **options
    )
    if not completion.choices:
        raise ApplicationError(
            "The model provider returned a reply without any choices.",
            {"status_code": 200},
            type=LLMErrorType.BAD_RESPONSE,
        )
    return completion


_FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "function_call"}

TextSink = Callable[[str], Awaitable[None]]
"""Receives the reply's text as it is generated, one delta at a time."""


async def stream_chat_completion(
    client: openai.AsyncOpenAI,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Iterable[Mapping[str, Any]] | None = None,
    on_text: TextSink,
    max_tokens: int | None = None,
) -> ChatCompletion:
    """One streaming Chat Completions call, handed back whole, as `chat_completion` does.

    Text deltas go to `on_text` as they arrive (for the live event stream); content and tool
    calls are put together from the chunks, so the caller stores the complete reply once.
    Usage is asked for with `stream_options.include_usage`.
    """
    options: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    if tools:
        options["tools"] = list(tools)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    stream = await client.chat.completions.create(model=model, messages=list(messages), **options)
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish_reason: str | None = None
    usage: Any = None
    ident, created, model_name = "", 0, model
    seen_choice = False
    async for chunk in stream:
        ident, created, model_name = chunk.id or ident, chunk.created or created, chunk.model
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            seen_choice = True
            delta = choice.delta
            if delta.content:
                content.append(delta.content)
                await on_text(delta.content)
            for call in delta.tool_calls or []:
                slot = calls.setdefault(
                    call.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["function"]["name"] += call.function.name or ""
                    slot["function"]["arguments"] += call.function.arguments or ""
            finish_reason = choice.finish_reason or finish_reason
    if not seen_choice:
        raise ApplicationError(
            "The model provider returned a reply without any choices.",
            {"status_code": 200},
            type=LLMErrorType.BAD_RESPONSE,
        )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return ChatCompletion.model_validate(
        {
            "id": ident or "stream",
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason
                    if finish_reason in _FINISH_REASONS
                    else ("tool_calls" if calls else "stop"),
                }
            ],
            "usage": usage,
        }
    )


def usage_of(completion: ChatCompletion) -> dict[str, int]:
    """Token counts of one completion; zeros when the server reports none. Cached tokens come
    from `prompt_tokens_details.cached_tokens` where the provider reports them."""
    usage = completion.usage
    prompt = usage.prompt_tokens if usage else 0
    produced = usage.completion_tokens if usage else 0
    total = usage.total_tokens if usage and usage.total_tokens else prompt + produced
    details = usage.prompt_tokens_details if usage else None
    cached = (details.cached_tokens or 0) if details else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": produced,
        "total_tokens": total,
        "cached_tokens": cached,
    }


def retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> timedelta | None:
    """The delay a response asks for: retry-after-ms, Retry-After seconds or an HTTP-date.

    None when absent, unparseable or not in the future; clipped to MAX_RETRY_AFTER.
    """
    if not headers:
        return None
    seconds: float | None = None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis, 1000.0)
    raw = headers.get("retry-after")
    if seconds is None and raw is not None:
        seconds = _number(raw, 1.0)
        if seconds is None:
            try:
                parsed = email.utils.parsedate_tz(raw)
                when = email.utils.mktime_tz(parsed) if parsed else None
            except (TypeError, ValueError, OverflowError):
                when = None
            if when is not None:
                seconds = when - (time.time() if now is None else now)
    if seconds is None or seconds <= 0:
        return None
    return min(timedelta(seconds=seconds), MAX_RETRY_AFTER)


def _number(text: str, divisor: float) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value / divisor if math.isfinite(value) else None


def _provider_message(error: openai.APIError) -> str:
    body = error.body
    message = body.get("message") if isinstance(body, Mapping) else None
    if not isinstance(message, str) or not message:
        message = error.message
    message = " ".join(message.split())
    if len(message) > _PROVIDER_MESSAGE_LIMIT:
        message = message[: _PROVIDER_MESSAGE_LIMIT - 3] + "..."
    return message


def _said(provider_message: str) -> str:
    return f"The provider said: {provider_message}" if provider_message else ""


def _is_context_length(error: openai.APIStatusError, provider_message: str) -> bool:
    return error.code == "context_length_exceeded" or bool(_CONTEXT_LENGTH.search(provider_message))


_IMAGES_REFUSED = re.compile(r"image|vision|multi-?modal", re.IGNORECASE)


def images_refused(exc: BaseException, model: str) -> ApplicationError | None:
    """The error of a provider that refused a request because it held images, if it is one.

    Providers answer a text-only model's image parts with a 400 (OpenAI: "image_url is only
    supported by certain models"; vLLM: "not a multimodal model"; Ollama, LM Studio: no
    vision). Retrying cannot help, so the run ends with words the user can act on.
    """
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 415, 422):
        return None
    said = _provider_message(exc)
    if not _IMAGES_REFUSED.search(said):
        return None
    return _error(
        f"the model {model} does not accept images; remove the images or choose a vision model",
        LLMErrorType.IMAGES_NOT_SUPPORTED,
        retryable=False,
        status_code=exc.status_code,
        code=exc.code,
        provider_message=said,
    )


def classify_llm_error(exc: BaseException, *, model: str | None = None) -> ApplicationError:
    """Turn an LLM call failure into the ApplicationError an activity should raise.

    408, 409, 429 and 5xx, timeouts and connection errors are retryable (with the
    server's Retry-After as `next_retry_delay`); other 4xx, a context-length error
    and an exhausted quota are not. The first detail is a dict with `status_code`,
    `code`, `provider_message` and `retry_after_seconds`.
    """
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _classify_status(exc, model)
    if isinstance(exc, openai.APITimeoutError):
        return _error(
            "The model provider did not answer in time; retrying may help.",
            LLMErrorType.TIMEOUT,
            retryable=True,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = f" ({type(cause).__name__}: {cause})" if cause else ""
        return _error(
            f"Could not connect to the model provider{reason}. Check OPENAI_BASE_URL and the "
            "network.",
            LLMErrorType.CONNECTION_FAILED,
            retryable=True,
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return _error(
            "The model provider sent a reply that does not follow the Chat Completions format.",
            LLMErrorType.BAD_RESPONSE,
            retryable=True,
            status_code=exc.status_code,
        )
    return _error(
        f"The model call failed unexpectedly: {type(exc).__name__}: {exc}",
        LLMErrorType.UNEXPECTED,
        retryable=True,
    )


def _classify_status(exc: openai.APIStatusError, model: str | None) -> ApplicationError:
    status = exc.status_code
    said = _provider_message(exc)
    which = f"the model {model!r}" if model else "the model"
    common = {"status_code": status, "code": exc.code, "provider_message": said}

    if status not in (408, 429) and _is_context_length(exc, said):
        return _error(
            f"The conversation is too long for {which}'s context window ({status}). "
            "Start a new project or ask for a smaller change.",
            LLMErrorType.CONTEXT_LENGTH_EXCEEDED,
            retryable=False,
            **common,
        )
    if status == 429 and exc.code == "insufficient_quota":
        return _error(
            "The model provider account has no quota left (429 insufficient_quota). Check the "
            "plan and billing of the account behind OPENAI_API_KEY.",
            LLMErrorType.QUOTA_EXCEEDED,
            retryable=False,
            **common,
        )
    if status == 429 or status == 408 or status == 409 or status >= 500:
        delay = retry_after(exc.response.headers)
        kind = {
            429: (LLMErrorType.RATE_LIMITED, "is rate limiting requests"),
            408: (LLMErrorType.TIMEOUT, "timed out on the request"),
            409: (LLMErrorType.UNAVAILABLE, "reported a conflict"),
        }.get(status, (LLMErrorType.UNAVAILABLE, "had an internal error"))
        return _error(
            f"The model provider {kind[1]} ({status}). {_said(said)}",
            kind[0],
            retryable=True,
            next_retry_delay=delay,
            **common,
        )
    if status == 401:
        return _error(
            f"The model provider rejected the API key (401). Check OPENAI_API_KEY. {_said(said)}",
            LLMErrorType.AUTHENTICATION_FAILED,
            retryable=False,
            **common,
        )
    if status == 403:
        return _error(
            f"The model provider refused access to {which} (403). Check that the key in "
            f"OPENAI_API_KEY may use it. {_said(said)}",
            LLMErrorType.PERMISSION_DENIED,
            retryable=False,
            **common,
        )
    if status == 404:
        return _error(
            f"The model provider does not know {which} or the endpoint (404). Check QAI_MODEL "
            f"and OPENAI_BASE_URL. {_said(said)}",
            LLMErrorType.NOT_FOUND,
            retryable=False,
            **common,
        )
    return _error(
        f"The model provider rejected the request as invalid ({status}). {_said(said)}",
        LLMErrorType.BAD_REQUEST,
        retryable=False,
        **common,
    )


def _error(
    message: str,
    error_type: LLMErrorType,
    *,
    retryable: bool,
    next_retry_delay: timedelta | None = None,
    status_code: int | None = None,
    code: str | None = None,
    provider_message: str | None = None,
) -> ApplicationError:
    details = {
        "status_code": status_code,
        "code": code,
        "provider_message": provider_message,
        "retry_after_seconds": next_retry_delay.total_seconds() if next_retry_delay else None,
    }
    return ApplicationError(
        message.strip(),
        details,
        type=str(error_type),
        non_retryable=not retryable,
        next_retry_delay=next_retry_delay,
    )
