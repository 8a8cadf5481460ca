"""The API token: `Authorization: Bearer <token>` for programs, an HttpOnly cookie for browsers.

The cookie holds an HMAC of the token, not the token, and is set by a login form, so the token
never appears in a URL or an access log. With no QAI_API_TOKEN every request is let through
(the API then only listens on loopback; see `api.server.check_exposure`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.context import context_of
from api.templating import render

COOKIE = "qai_session"

router = APIRouter(include_in_schema=False)


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"qai-browser-session", hashlib.sha256).hexdigest()


def authorized(request: Request) -> bool:
    """Whether the request carries the token (as a Bearer header or the login cookie)."""
    secret = context_of(request).settings.qai_api_token
    if secret is None or not secret.get_secret_value():
        return True
    token = secret.get_secret_value()
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, session_value(token))


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
    return hmac.compare_digest(password.encode(), secret.get_secret_value().encode())


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


@router.get("/login")
async def login_page() -> HTMLResponse:
    return HTMLResponse(render("login.html", error=""))


@router.post("/login")
async def login(request: Request, token: str = Form("")) -> Response:
    secret = context_of(request).settings.qai_api_token
    expected = secret.get_secret_value() if secret else ""
    if not expected or not hmac.compare_digest(token, expected):
        page = render("login.html", error="That token is not right.")
        return HTMLResponse(page, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        session_value(expected),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
