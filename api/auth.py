"""The API token: `Authorization: Bearer <token>` for programs, a session cookie for browsers.

A login form (so the token never appears in a URL or an access log) makes a server-side session:
the HttpOnly, host-only cookie holds a random id, the database a hash of it and its expiry, and
logging out deletes it. A cookie session must also send its CSRF token (`X-CSRF-Token`, or the
`csrf_token` form field) with anything that changes state. With no QAI_API_TOKEN every request
is let through (the API then only listens on loopback; see `api.server.check_exposure`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.context import context_of
from api.limits import client_address
from api.templating import render
from runtime import metrics
from storage import sessions

COOKIE = "qai_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
WRONG_TOKEN_DELAY_SECONDS = 1.0
"""A wrong token waits this long before its 401, so guessing is slow even below the limit."""

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Identity:
    """Who a request is: `key` names it for limits; `session` is set for a cookie session."""

    key: str
    session: str | None = None


def _same(given: str, expected: str) -> bool:
    """compare_digest on bytes: a non-ASCII value is simply wrong, not a TypeError."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _token(request: Request) -> str:
    secret = context_of(request).settings.qai_api_token
    return secret.get_secret_value() if secret is not None else ""


def token_identity(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), b"qai-csrf", hashlib.sha256).hexdigest()


async def identify(request: Request) -> Identity | None:
    """The request's identity, or None when it lacks the token. Cached on the request."""
    if hasattr(request.state, "identity"):
        return request.state.identity
    token = _token(request)
    identity: Identity | None
    if not token:
        identity = Identity(key="address:" + client_address(request))
    else:
        identity = None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        cookie = request.cookies.get(COOKIE, "")
        if scheme.lower() == "bearer" and _same(given.strip(), token):
            identity = Identity(key=token_identity(token))
        elif cookie and len(cookie) <= 128:
            async with context_of(request).db.session() as session:
                if await sessions.is_valid(session, _hash(cookie)):
                    identity = Identity(key=token_identity(token), session=cookie)
    request.state.identity = identity
    return identity


def authorized(request: Request) -> bool:
    """Whether `identify` (run by the app's middleware for every request) found the token."""
    return getattr(request.state, "identity", None) is not None


async def csrf_ok(request: Request, identity: Identity) -> bool:
    """A cookie session's unsafe request carries its CSRF token (header or form field)."""
    if identity.session is None or request.method in {"GET", "HEAD", "OPTIONS"}:
        return True
    if request.url.path == "/login":  # a new login replaces the session; Origin guards it
        return True
    expected = csrf_token(identity.session)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (fields.get(CSRF_FIELD) or [None])[0]
    return given is not None and _same(given, expected)


def client_key(request: Request) -> str:
    """The rate limits' and stream caps' key: the token's identity, else the address."""
    identity = getattr(request.state, "identity", None)
    return identity.key if identity is not None else "address:" + client_address(request)


def too_many(wait: int, limit: str) -> HTTPException:
    metrics.RATE_LIMITED.inc()
    return HTTPException(
        429,
        f"too many requests; the limit is {limit}. Try again in {wait} s",
        headers={"Retry-After": str(wait)},
    )


async def limit_action(request: Request) -> None:
    """The dependency of costly routes: QAI_ACTION_RATE_LIMIT per client."""
    context = context_of(request)
    wait = context.actions.retry_after(client_key(request))
    if wait is not None:
        raise too_many(wait, context.settings.qai_action_rate_limit)


def git_authorized(request: Request) -> bool:
    """For git clients: the token as the password of HTTP Basic auth (any user name), or as
    a Bearer token; with no QAI_API_TOKEN, the same as every route (loopback only)."""
    if authorized(request):
        return True
    secret = context_of(request).settings.qai_api_token
    assert secret is not None  # authorized() lets everything through without a token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(given.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, _, password = decoded.partition(":")
    return _same(password, secret.get_secret_value())


def git_unauthorized() -> Response:
    """401 with a Basic challenge, which makes git ask its credential helper for the token."""
    return Response(
        "this repository needs the API token: use it as the password (any user name)\n",
        status_code=401,
        media_type="text/plain",
        headers={"WWW-Authenticate": 'Basic realm="qai", charset="UTF-8"'},
    )


def unauthorized() -> JSONResponse:
    return JSONResponse(
        {"detail": "this API needs its token: send Authorization: Bearer <token>, or log in"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden_without_csrf() -> JSONResponse:
    return JSONResponse(
        {"detail": "this request lacks the page's CSRF token; reload the page and try again"},
        status_code=403,
    )


def wrong_token_refusal(request: Request) -> JSONResponse | None:
    """A 429 for a client that sent too many wrong tokens lately (counting this one)."""
    context = context_of(request)
    wait = context.failures.retry_after("address:" + client_address(request))
    if wait is None:
        return None
    return JSONResponse(
        {"detail": f"too many wrong tokens; try again in {wait} s"},
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


def secure_cookie(request: Request) -> bool:
    """https as the user sees it: QAI_PUBLIC_URL, or the scheme (trusted proxies' only)."""
    public = context_of(request).settings.qai_public_url
    if public:
        return public.startswith("https://")
    return request.url.scheme == "https"


@router.get("/login")
async def login_page() -> HTMLResponse:
    return HTMLResponse(render("login.html", error=""))


@router.post("/login", dependencies=[Depends(limit_action)])
async def login(request: Request, token: str = Form("")) -> Response:
    context = context_of(request)
    expected = _token(request)
    if not expected or not _same(token, expected):
        refused = wrong_token_refusal(request)
        if refused is not None:
            return refused
        await asyncio.sleep(WRONG_TOKEN_DELAY_SECONDS)
        page = render("login.html", error="That token is not right.")
        return HTMLResponse(page, status_code=401)
    session_id = secrets.token_urlsafe(32)
    seconds = context.settings.qai_session_hours * 3600
    async with context.db.session() as session:
        await sessions.create(session, _hash(session_id), seconds)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(  # no Domain: host-only, so no sibling name (a preview) gets it
        COOKIE,
        session_id,
        max_age=int(seconds),
        httponly=True,
        samesite="strict",
        secure=secure_cookie(request),
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    identity = getattr(request.state, "identity", None)
    if identity is not None and identity.session is not None:
        async with context_of(request).db.session() as session:
            await sessions.revoke(session, _hash(identity.session))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
