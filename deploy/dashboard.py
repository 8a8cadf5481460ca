"""The qai dashboard, defined once: the Grafana JSON and a PNG rendering of the same panels.

    python deploy/dashboard.py json      writes deploy/grafana/qai-dashboard.json
    uv run --group dashboard python deploy/dashboard.py render --prometheus http://HOST:9090 \\
        --start 2026-11-23T20:47:00Z --end 2026-11-23T21:00:00Z --out docs/dashboard.png

`render` queries a Prometheus server for each panel's expressions over a time range and draws
them with matplotlib (the `dashboard` dependency group, not needed to run qai): for a machine
without Grafana, as the one docs/operations.md's screenshot was made on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DASHBOARD_JSON = Path(__file__).resolve().parent / "grafana" / "qai-dashboard.json"
WINDOW = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: list[Query] = field(default_factory=list)
    description: str = ""


def q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def p95(metric: str, by: str = "") -> str:
    groups = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.95, sum by ({groups}) (rate({metric}_bucket[{WINDOW}])))"


PANELS: list[Panel] = [
    Panel(
        "Runs",
        "short",
        [
            q(f"sum(increase(qai_runs_started_total[{WINDOW}]))", "started"),
            q(f"sum by (status) (increase(qai_runs_ended_total[{WINDOW}]))", "ended {{status}}"),
        ],
        "Runs started, and ended by status (RESULT, ERROR, cancelled).",
    ),
    Panel(
        "Error rate",
        "percentunit",
        [
            q(
                f'sum(rate(qai_runs_ended_total{{status="ERROR"}}[{WINDOW}])) '
                f"/ sum(rate(qai_runs_ended_total[{WINDOW}]))",
                "ERROR / ended",
            )
        ],
        "Share of ended runs that ended in an ERROR (cancelled runs not counted as errors).",
    ),
    Panel(
        "Run duration",
        "s",
        [
            q(p95("qai_run_duration_seconds"), "p95"),
            q(
                f"sum(rate(qai_run_duration_seconds_sum[{WINDOW}])) "
                f"/ sum(rate(qai_run_duration_seconds_count[{WINDOW}]))",
                "mean",
            ),
        ],
    ),
    Panel(
        "Iterations per run",
        "short",
        [
            q(
                f"sum(rate(qai_run_iterations_sum[{WINDOW}])) "
                f"/ sum(rate(qai_run_iterations_count[{WINDOW}]))",
                "mean",
            )
        ],
    ),
    Panel(
        "Model call latency (p95)",
        "s",
        [q(p95("qai_model_call_seconds", "model"), "{{model}}")],
    ),
    Panel(
        "Tokens per second",
        "short",
        [q(f"sum by (model, dir) (rate(qai_model_tokens_total[{WINDOW}]))", "{{model}} {{dir}}")],
    ),
    Panel(
        "Tool calls",
        "short",
        [
            q(
                f"sum by (tool, outcome) (increase(qai_tool_calls_total[{WINDOW}]))",
                "{{tool}} {{outcome}}",
            )
        ],
    ),
    Panel(
        "Checks",
        "short",
        [
            q(
                f"sum by (check, status) (increase(qai_checks_total[{WINDOW}]))",
                "{{check}} {{status}}",
            )
        ],
    ),
    Panel(
        "Sandboxes",
        "short",
        [q("sum by (state) (qai_sandboxes)", "{{state}}")],
        "Live (pool included), pooled and hibernated sandboxes, summed over hosts.",
    ),
    Panel(
        "Sandbox create and revival (p95)",
        "s",
        [
            q(p95("qai_sandbox_create_seconds"), "create"),
            q(p95("qai_sandbox_revival_seconds"), "revival"),
        ],
    ),
    Panel(
        "Preview gateway requests",
        "short",
        [
            q(
                f"sum by (outcome) (increase(qai_gateway_request_seconds_count[{WINDOW}]))",
                "{{outcome}}",
            ),
        ],
        "Proxied, forwarded to the holding host, answered while reviving, not found, error.",
    ),
    Panel(
        "API latency (p95)",
        "s",
        [q(p95("qai_api_request_seconds", "route"), "{{route}}")],
        "Until the response starts (an event stream's too), by route template.",
    ),
    Panel(
        "API requests",
        "reqps",
        [q(f"sum by (status) (rate(qai_api_request_seconds_count[{WINDOW}]))", "{{status}}")],
    ),
    Panel(
        "SSE clients and rate-limit refusals",
        "short",
        [
            q("sum(qai_sse_clients)", "SSE clients"),
            q(f"sum(increase(qai_rate_limit_refusals_total[{WINDOW}]))", "429s"),
        ],
    ),
    Panel(
        "Temporal schedule-to-start (p95)",
        "s",
        [
            q(p95("temporal_workflow_task_schedule_to_start_latency"), "workflow tasks"),
            q(p95("temporal_activity_schedule_to_start_latency"), "activities"),
        ],
        "Time tasks wait for a worker: rising means too few workers.",
    ),
    Panel(
        "Temporal task latency and sticky cache",
        "short",
        [
            q(p95("temporal_activity_execution_latency"), "activity p95 (s)"),
            q(p95("temporal_workflow_task_execution_latency"), "workflow task p95 (s)"),
            q("sum(temporal_sticky_cache_size)", "sticky cache size"),
        ],
    ),
]


# ------------------------------------------------------------------ Grafana JSON

COLUMNS, WIDTH, HEIGHT = 3, 8, 8


def grafana_dashboard() -> dict[str, Any]:
    panels = []
    for index, panel in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "description": panel.description,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
                "gridPos": {
                    "x": (index % COLUMNS) * WIDTH,
                    "y": (index // COLUMNS) * HEIGHT,
                    "w": WIDTH,
                    "h": HEIGHT,
                },
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": {"type": "prometheus", "uid": "prometheus"},
                        "expr": query.expr,
                        "legendFormat": query.legend,
                    }
                    for n, query in enumerate(panel.queries)
                ],
            }
        )
    return {
        "uid": "qai-overview",
        "title": "qai",
        "tags": ["qai"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def dashboard_text() -> str:
    return json.dumps(grafana_dashboard(), indent=2) + "\n"


# ------------------------------------------------------------------ rendering


def _query_range(base: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
    return list(body["data"]["result"])


def _legend(template: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def render(base: str, start: float, end: float, out: Path, window: str, step: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = math.ceil(len(PANELS) / COLUMNS)
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 3.3 * rows))
    figure.patch.set_facecolor("#111217")
    for ax, panel in zip(axes.flat, PANELS, strict=False):
        ax.set_facecolor("#181b1f")
        ax.set_title(f"{panel.title}  [{panel.unit}]", color="#d8d9da", fontsize=10, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        ax.grid(color="#2c3235", linewidth=0.5)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        drawn = 0
        for query in panel.queries:
            expr = query.expr.replace(WINDOW, window)
            for series in _query_range(base, expr, start, end, step):
                points = [(float(t), float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if not points:
                    continue
                times = [datetime.fromtimestamp(t, UTC) for t, _ in points]
                ax.plot(
                    times,
                    [v for _, v in points],
                    linewidth=1.4,
                    label=_legend(query.legend, series["metric"]),
                )
                drawn += 1
        if drawn:
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#d8d9da", edgecolor="#2c3235")
        else:
            ax.text(0.5, 0.5, "no data", color="#8e8e8e", ha="center", transform=ax.transAxes)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.set_visible(False)
    when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M")
    figure.suptitle(
        f"qai — rendered from Prometheus ({when} UTC, {window} windows) by deploy/dashboard.py",
        color="#d8d9da",
    )
    figure.tight_layout(rect=(0, 0, 1, 0.975))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80, facecolor=figure.get_facecolor())


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("json", help=f"write {DASHBOARD_JSON.name}")
    drawing = commands.add_parser("render", help="draw the panels from a Prometheus server")
    drawing.add_argument("--prometheus", required=True, help="base URL, e.g. http://host:9090")
    drawing.add_argument("--start", required=True, help="ISO time, e.g. 2026-11-23T20:47:00Z")
    drawing.add_argument("--end", required=True)
    drawing.add_argument("--window", default="1m", help="rate window (Grafana: auto)")
    drawing.add_argument("--step", type=float, default=5.0, help="seconds between points")
    drawing.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    args = parser.parse_args(argv)
    if args.command == "json":
        DASHBOARD_JSON.write_text(dashboard_text())
        print(f"wrote {DASHBOARD_JSON}")
        return 0
    try:
        render(
            args.prometheus.rstrip("/"),
            _timestamp(args.start),
            _timestamp(args.end),
            args.out,
            args.window,
            args.step,
        )
    except ImportError:
        print("render needs matplotlib: uv run --group dashboard python deploy/dashboard.py ...")
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
