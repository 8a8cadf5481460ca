"""Bad input, the token, the rate limit, health and offline docs: over HTTP against real
PostgreSQL and Temporal, with no worker (so anything sent to Temporal would stay unanswered and
nothing may reach PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.server import ApiExposedError, check_exposure, running_api
from runtime.settings import Settings
from storage.db import Database
from tests.workflows.conftest import settings_for

ROOT = Path(__file__).resolve().parents[2]


async def _serve(
    env: WorkflowEnvironment, database_url: str, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        "http://unused/v1",
        qai_api_port=0,
        qai_task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    async with (
        running_api(settings, database_url, env.client) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


@pytest.fixture
async def http(workflow_env, database_url: str, clean_db: Database):
    async for client in _serve(workflow_env, database_url, qai_rate_limit="3/minute"):
        yield client


async def _project_count(http: httpx.AsyncClient) -> int:
    return len((await http.get("/api/projects")).json()["projects"])


async def test_bad_input_gets_plain_words_and_writes_nothing(http: httpx.AsyncClient) -> None:
    cases = [
        ({"json": {"prompt": "   "}}, 422, "the prompt is empty"),
        ({"json": {"prompt": "x" * 10_001}}, 422, "the limit is 10,000"),
        ({"json": {}}, 422, "prompt is missing"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "not valid JSON",
        ),
        ({"json": ["a list"]}, 422, "JSON object"),
        ({"json": {"prompt": "y" * 70_000}}, 413, "larger than 64 KB"),
    ]
    for kwargs, status, words in cases:
        response = await http.post("/api/projects", **kwargs)
        assert response.status_code == status, (kwargs.keys(), response.text)
        assert words in response.json()["detail"]
    unknown = uuid.uuid4()
    for method, path in [
        ("GET", f"/api/projects/{unknown}"),
        ("GET", "/api/projects/not-a-uuid"),
        ("DELETE", f"/api/projects/{unknown}"),
        ("POST", f"/api/projects/{unknown}/cancel"),
        ("GET", f"/api/projects/{unknown}/events"),
        ("GET", f"/api/fragments/{unknown}"),
        ("GET", f"/api/fragments/{unknown}/archive"),
        ("POST", f"/api/fragments/{unknown}/restore"),
    ]:
        response = await http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "there is no" in response.json()["detail"]
    follow_up = await http.post(f"/api/projects/{unknown}/messages", json={"prompt": "hi"})
    assert follow_up.status_code == 404
    bad_cursor = await http.get("/api/projects", params={"cursor": "nonsense"})
    assert bad_cursor.status_code == 422 and "cursor" in bad_cursor.json()["detail"]
    assert await _project_count(http) == 0


async def test_submissions_past_the_rate_limit_get_429(http: httpx.AsyncClient) -> None:
    for _ in range(3):
        accepted = await http.post("/api/projects", json={"prompt": "A todo app"})
        assert accepted.status_code == 201
    refused = await http.post("/api/projects", json={"prompt": "A todo app"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "3/minute" in refused.json()["detail"]


async def test_health_and_offline_docs(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert health.status_code == 200 and health.json()["postgres"] is True
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    assert (await http.get("/docs-assets/swagger-ui-bundle.js")).status_code == 200
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {"/api/projects", "/api/projects/{project_id}/events", "/healthz"} <= set(paths)


async def test_the_token_guards_every_api_route(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    async for http in _serve(workflow_env, database_url, qai_api_token="s3cret"):
        assert (await http.get("/api/projects")).status_code == 401
        wrong = await http.get("/api/projects", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["detail"]
        refused = await http.post("/api/projects", json={"prompt": "A todo app"})
        assert refused.status_code == 401
        ok = await http.get("/api/projects", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["projects"] == []
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.post("/login", data={"token": "nope"})).status_code == 401
        login = await http.post("/login", data={"token": "s3cret"})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "s3cret" not in cookie
        assert (await http.get("/api/projects")).status_code == 200  # the cookie now


@pytest.mark.slow
def test_a_public_address_without_a_token_is_refused() -> None:
    exposed = Settings(_env_file=None, qai_api_host="0.0.0.0")  # type: ignore[call-arg]
    with pytest.raises(ApiExposedError):
        check_exposure(exposed)
    check_exposure(exposed.model_copy(update={"qai_api_host": "127.0.0.1"}))
    result = subprocess.run(
        [sys.executable, "-m", "api"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "QAI_API_HOST": "0.0.0.0", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("qai: QAI_API_HOST=0.0.0.0 is reachable from other machines")


async def test_health_names_postgres_when_it_does_not_answer(
    workflow_env: WorkflowEnvironment,
) -> None:
    from api.app import create_app
    from api.context import ApiContext
    from api.events import EventHub
    from api.limits import RateLimiter

    settings = settings_for("http://unused/v1")
    dead = Database("postgresql://nobody@127.0.0.1:1/none")
    context = ApiContext(settings, dead, workflow_env.client, EventHub(dead), RateLimiter(1, 60))
    transport = httpx.ASGITransport(app=create_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            health = await http.get("/healthz")
    finally:
        await dead.dispose()
    assert health.status_code == 503
    assert health.json()["detail"] == "PostgreSQL not answering"


async def test_an_idle_stream_sends_comment_heartbeats(
    workflow_env: WorkflowEnvironment, database_url: str, clean_db: Database
) -> None:
    from storage import queries
    from tests.api.conftest import read_events

    async with clean_db.session() as session:
        project, _ = await queries.create_project(session, "idle", "An idle project")
    settings = settings_for("http://unused/v1", qai_api_port=0)
    async with (
        running_api(settings, database_url, workflow_env.client, heartbeat_seconds=0.2) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        comments: list[str] = []
        got = await read_events(http, str(project.id), lambda _: False, comments=comments)
    assert got == [] and comments == [": keep-alive"]
