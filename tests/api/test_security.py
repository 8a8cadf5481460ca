"""Cross-site requests, DNS rebinding, sessions, CSRF and limits: over HTTP against the real API
(uvicorn), PostgreSQL and Temporal, with no worker."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api import auth
from api.limits import RateLimiter
from api.server import running_api
from storage.db import Database
from tests.workflows.conftest import settings_for

PROMPT = {"prompt": "A todo app"}


def _serve(env: WorkflowEnvironment, database_url: str, **overrides: object):
    settings = settings_for(
        "http://unused/v1",
        qai_api_port=0,
        qai_task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    return running_api(settings, database_url, env.client)


async def test_a_foreign_host_and_a_cross_site_post_are_refused(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    public = {"qai_public_url": "https://qai.example.com"}
    async with (
        _serve(workflow_env, database_url, **public) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        port = url.rpartition(":")[2]
        # DNS rebinding: an attacker's name resolving to loopback.
        rebound = await http.get("/api/projects", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 421
        assert "host name" in rebound.json()["detail"]
        for name in (f"localhost:{port}", f"127.0.0.1:{port}", "qai.example.com"):
            assert (await http.get("/api/projects", headers={"Host": name})).status_code == 200
        assert (await http.get("/healthz", headers={"Host": "api:8000"})).status_code == 200
        assert (await http.get("/metrics", headers={"Host": "api:8000"})).status_code == 200

        preview = f"http://{uuid.uuid4()}.preview.localhost:8080"
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": preview},  # a preview's JavaScript, same site in the k8s layout
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            refused = await http.post("/api/projects", json=PROMPT, headers=headers)
            assert refused.status_code == 403, headers
            assert "another site" in refused.json()["detail"]
            cancel = f"/api/projects/{uuid.uuid4()}/cancel"
            assert (await http.post(cancel, headers=headers)).status_code == 403
            delete = f"/api/projects/{uuid.uuid4()}"
            assert (await http.delete(delete, headers=headers)).status_code == 403
        same = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        assert (await http.post("/api/projects", json=PROMPT, headers=same)).status_code == 201
        proxied = {"Origin": "https://qai.example.com", "Host": "qai.example.com"}
        assert (await http.post("/api/projects", json=PROMPT, headers=proxied)).status_code == 201
        assert (await http.post("/api/projects", json=PROMPT)).status_code == 201  # curl, CLI

        # Every answer forbids framing, the UI's pages first.
        for path in ("/", "/login", "/api/projects", "/docs"):
            response = await http.get(path)
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
        from storage import queries

        async with clean_db.session() as session:
            project, _ = await queries.create_project(session, "framed", "A framed project")
        page = (await http.get(f"/projects/{project.id}")).text
        frame = re.search(r"<iframe id=\"preview\"[^>]*>", page)
        assert frame and 'sandbox="allow-scripts allow-same-origin' in frame.group(0)
        assert "allow-top-navigation" not in frame.group(0)


async def test_a_cookie_session_needs_its_csrf_token_expires_and_logout_revokes_it(
    workflow_env: WorkflowEnvironment,
    database_url: str,
    clean_db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "WRONG_TOKEN_DELAY_SECONDS", 0.01)
    settings = {"qai_api_token": "s3cret", "qai_public_url": "https://qai.example.com"}
    async with (
        _serve(workflow_env, database_url, **settings) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        # A non-ASCII token or login value is just wrong: 401, not a 500.
        bearer = {"Authorization": "Bearer sécret".encode()}
        assert (await http.get("/api/projects", headers=bearer)).status_code == 401
        assert (await http.post("/login", data={"token": "sécret"})).status_code == 401

        login = await http.post("/login", data={"token": "s3cret"})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "Domain" not in cookie and "domain" not in cookie  # host-only
        assert "Secure" in cookie and "Max-Age=43200" in cookie and "HttpOnly" in cookie
        session = re.match(r"qai_session=([^;]+)", cookie).group(1)  # type: ignore[union-attr]
        http.cookies.set("qai_session", session)  # this test speaks http to a proxy's https
        assert "s3cret" not in session
        assert (await http.get("/api/projects")).status_code == 200

        # Changes need the page's CSRF token; a form-POST from a preview has none.
        refused = await http.post("/api/projects", json=PROMPT)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        forged = await http.post("/api/projects", json=PROMPT, headers={"X-CSRF-Token": "0" * 64})
        assert forged.status_code == 403
        home = (await http.get("/")).text
        token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', home)
        assert token and f'"X-CSRF-Token": "{token.group(1)}"' in home  # htmx sends it too
        csrf = {"X-CSRF-Token": token.group(1)}
        assert (await http.post("/api/projects", json=PROMPT, headers=csrf)).status_code == 201
        # The bearer token needs none: no browser sends it on its own.
        other = {"Authorization": "Bearer s3cret"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=other) as program:
            assert (await program.post("/api/projects", json=PROMPT)).status_code == 201

        # Logging in again from a logged-in browser needs no CSRF token (Origin guards it).
        assert (await http.post("/login", data={"token": "s3cret"})).status_code == 303
        http.cookies.set("qai_session", session)

        # Logging out without the token is refused; with it, the session ends for good.
        assert (await http.post("/logout")).status_code == 403
        out = await http.post("/logout", data={"csrf_token": token.group(1)})
        assert out.status_code == 303
        http.cookies.set("qai_session", session)  # a stolen copy of the cookie
        assert (await http.get("/api/projects")).status_code == 401
        assert (await http.get("/")).status_code == 303

        # An expired session is refused too.
        again = await http.post("/login", data={"token": "s3cret"})
        fresh = re.match(r"qai_session=([^;]+)", again.headers["set-cookie"])
        http.cookies.set("qai_session", fresh.group(1))  # type: ignore[union-attr]
        assert (await http.get("/api/projects")).status_code == 200
        async with clean_db.session() as db_session:
            from sqlalchemy import text

            await db_session.execute(
                text("UPDATE browser_sessions SET expires_at = now() - interval '1 second'")
            )
            await db_session.commit()
        assert (await http.get("/api/projects")).status_code == 401

        # Repeated wrong tokens are slowed down, then refused outright for a while.
        http.cookies.clear()
        statuses = [
            (await http.get("/api/projects", headers={"Authorization": "Bearer x"})).status_code
            for _ in range(12)
        ]
        assert statuses[:8] == [401] * 8 and statuses[-1] == 429


async def test_limits_key_on_trusted_proxies_only_and_cover_costly_routes(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    limits = {"qai_rate_limit": "2/minute", "qai_action_rate_limit": "3/minute"}
    async with (
        _serve(workflow_env, database_url, **limits) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        spoofed = [
            (
                await http.post(
                    "/api/projects", json=PROMPT, headers={"X-Forwarded-For": f"10.0.0.{i}"}
                )
            ).status_code
            for i in range(3)
        ]
        assert spoofed == [201, 201, 429]  # a loopback client cannot pick a fresh bucket
        unknown = uuid.uuid4()
        actions = [
            (await http.post(f"/api/projects/{unknown}/cancel")).status_code,
            (await http.post(f"/api/fragments/{unknown}/restore")).status_code,
            (await http.get(f"/api/fragments/{unknown}/archive")).status_code,
            (await http.delete(f"/api/projects/{unknown}")).status_code,
            (await http.get(f"/api/projects/{unknown}/events")).status_code,
        ]
        assert actions == [404, 404, 404, 429, 429]
    async with (
        _serve(workflow_env, database_url, qai_trusted_proxies="127.0.0.1/32", **limits) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        behind = [
            (
                await http.post(
                    "/api/projects", json=PROMPT, headers={"X-Forwarded-For": f"10.0.0.{i % 2}"}
                )
            ).status_code
            for i in range(6)
        ]
        assert behind == [201, 201, 201, 201, 429, 429]  # two clients behind the proxy


async def test_event_streams_are_capped_per_client_and_in_total(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    from storage import queries

    async with clean_db.session() as session:
        project, _ = await queries.create_project(session, "streams", "A watched project")
    caps = {"qai_sse_max_per_client": 2, "qai_sse_max": 3, "qai_trusted_proxies": "127.0.0.1"}
    path = f"/api/projects/{project.id}/events"
    async with (
        _serve(workflow_env, database_url, **caps) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):

        async def open_stream(client: str) -> httpx.Response:
            request = http.build_request("GET", path, headers={"X-Forwarded-For": client})
            return await http.send(request, stream=True)

        first = [await open_stream("10.0.0.1") for _ in range(2)]
        assert [r.status_code for r in first] == [200, 200]
        third = await open_stream("10.0.0.1")
        assert third.status_code == 429 and "2 event streams" in (await third.aread()).decode()
        other = await open_stream("10.0.0.2")
        assert other.status_code == 200
        full = await open_stream("10.0.0.3")
        assert full.status_code == 429 and "3 event streams" in (await full.aread()).decode()
        await first[0].aclose()  # a closed stream frees its slot
        for _ in range(50):
            again = await open_stream("10.0.0.1")
            if again.status_code == 200:
                break
            await again.aclose()
            await asyncio.sleep(0.1)
        assert again.status_code == 200
        for response in (first[1], other, again):
            await response.aclose()


def test_the_limiter_forgets_idle_clients() -> None:
    limiter = RateLimiter(2, 60, max_clients=100)
    for i in range(1000):
        assert limiter.retry_after(f"client-{i}", now=float(i)) is None
    assert len(limiter) <= 100
    limiter.retry_after("late", now=10_000.0)
    assert len(limiter) == 1


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    for proxies, secure in (("", False), ("127.0.0.1", True)):
        settings = {"qai_api_token": "s3cret", "qai_trusted_proxies": proxies}
        async with (
            _serve(workflow_env, database_url, **settings) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            login = await http.post("/login", data={"token": "s3cret"}, headers=forwarded)
            assert login.status_code == 303
            assert ("Secure" in login.headers["set-cookie"]) is secure, proxies
