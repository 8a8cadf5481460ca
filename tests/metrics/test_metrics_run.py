"""Metrics move during a real run: `/metrics` scraped before and after one project over HTTP
(real API, worker, PostgreSQL, Temporal test server, scripted model, sandbox)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics
from runtime.temporal import connect_temporal
from tests.api.conftest import read_events, run_done
from tests.workflows.test_code_agent import page, summary_turn, terminal_turn, write_turn

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")  # no token needed, even when the API has one
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


@pytest.mark.sandbox
@pytest.mark.slow
async def test_a_run_moves_the_counters(api_stack) -> None:
    marker = f"Metered {uuid.uuid4().hex[:6]}"
    script = {
        "default": {
            "title": "Metered Page",
            "turns": [
                write_turn("app/page.tsx", page(marker)),
                terminal_turn("grep -c Metered app/page.tsx"),
                summary_turn("A metered page."),
            ],
        }
    }
    async with api_stack(script, qai_api_token="secret-token") as stack:
        http = stack.http
        before = await scrape(http)
        auth = {"Authorization": "Bearer secret-token"}
        created = await http.post("/api/projects", json={"prompt": "A page"}, headers=auth)
        assert created.status_code == 201, created.text
        project_id, message_id = created.json()["project_id"], created.json()["message_id"]
        http.headers.update(auth)
        async with asyncio.timeout(300):
            await read_events(http, project_id, run_done(message_id))
        after = await scrape(http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("qai_runs_started_total") == 1
    assert moved("qai_runs_ended_total", status="RESULT") == 1
    assert moved("qai_runs_ended_total", status="ERROR") == 0
    assert moved("qai_run_iterations_count", status="RESULT") == 1
    assert moved("qai_run_iterations_sum", status="RESULT") == 3
    assert moved("qai_run_duration_seconds_count", status="RESULT") == 1
    assert moved("qai_run_duration_seconds_sum", status="RESULT") > 0
    # Three agent turns and the title, each with the scripted usage.
    assert moved("qai_model_calls_total", model="scripted", purpose="agent", outcome="ok") == 3
    assert moved("qai_model_calls_total", model="scripted-mini", purpose="title") == 1
    assert moved("qai_model_call_seconds_count", model="scripted", purpose="agent") == 3
    assert moved("qai_model_tokens_total", model="scripted", dir="in") > 0
    assert moved("qai_model_tokens_total", model="scripted", dir="out") > 0
    assert moved("qai_tool_calls_total", tool="createOrUpdateFiles", outcome="ok") == 1
    assert moved("qai_tool_calls_total", tool="terminal", outcome="ok") == 1
    assert moved("qai_checks_total", check="types") == 1
    assert moved("qai_run_checks_total") == 1
    assert moved("qai_sandbox_create_seconds_count") == 1
    # The API: the route template, never the project id.
    assert moved("qai_api_request_seconds_count", route="/api/projects", status="201") == 1
    assert moved("qai_api_request_seconds_count", route="/api/projects/{project_id}/events") >= 1
    assert not any(project_id in "".join(dict(ls).values()) for _, ls in after)


async def test_the_worker_server_serves_metrics_health_and_temporal_sdk_metrics(
    workflow_env,
) -> None:
    """The worker's standalone `/metrics` joins the Temporal SDK's metrics from a client made
    by `connect_temporal`; `/healthz` follows its health check."""
    address = workflow_env.client.service_client.config.target_host
    await connect_temporal(address)  # the SDK counts the requests of connecting
    healthy = True

    async def health() -> bool:
        return healthy

    async with (
        metrics.serving_metrics("127.0.0.1", 0, health) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        page_text = (await http.get("/metrics")).text
        names = {name for name, _ in parse(page_text)}
        assert "qai_runs_started_total" in names
        assert any(name.startswith("temporal_request") for name in names), sorted(names)[:40]
        assert (await http.get("/healthz")).status_code == 200
        healthy = False
        down = await http.get("/healthz")
        assert down.status_code == 503
        assert down.json() == {"detail": "unhealthy"}


def test_label_values_stay_bounded() -> None:
    before = value(parse(_own_text()), "qai_tool_calls_total", tool="other", outcome="ok")
    metrics.tool_call("rm -rf / # a made-up tool", {"terminal"}, "ok")
    after = parse(_own_text())
    assert value(after, "qai_tool_calls_total", tool="other", outcome="ok") == before + 1
    assert not any("made-up" in "".join(dict(ls).values()) for _, ls in after)
    assert metrics.bounded("terminal", {"terminal"}) == "terminal"


def _own_text() -> str:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()


async def test_a_taken_metrics_port_is_one_clear_error() -> None:
    async with metrics.serving_metrics("127.0.0.1", 0) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(metrics.MetricsServerError, match=f"127.0.0.1:{port}.*QAI_METRICS_PORT"):
            async with metrics.serving_metrics("127.0.0.1", port):
                pass
