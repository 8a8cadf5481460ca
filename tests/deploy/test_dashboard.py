"""The Grafana dashboard is the one deploy/dashboard.py defines, and graphs only metrics that
exist: qai's own (runtime/metrics.py) or the Temporal SDK's."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from prometheus_client import REGISTRY

import runtime.metrics  # noqa: F401  (registers qai's metrics)

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("qai_dashboard", ROOT / "deploy" / "dashboard.py")
assert spec and spec.loader
dashboard = importlib.util.module_from_spec(spec)
sys.modules["qai_dashboard"] = dashboard  # dataclasses look their module up
spec.loader.exec_module(dashboard)

TEMPORAL_SDK = {
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_activity_schedule_to_start_latency",
    "temporal_activity_execution_latency",
    "temporal_workflow_task_execution_latency",
    "temporal_sticky_cache_size",
}


def test_the_committed_json_is_generated_from_the_panels() -> None:
    committed = (ROOT / "deploy" / "grafana" / "qai-dashboard.json").read_text()
    assert committed == dashboard.dashboard_text(), "run: python deploy/dashboard.py json"


def qai_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    # A histogram's buckets, sums and counts exist before the first observation too.
    for family in REGISTRY.collect():
        if family.type == "histogram":
            names.update(f"{family.name}_{part}" for part in ("bucket", "sum", "count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_every_panel_graphs_an_existing_metric() -> None:
    known = qai_series() | {f"{name}_bucket" for name in TEMPORAL_SDK} | TEMPORAL_SDK
    panels = json.loads(dashboard.dashboard_text())["panels"]
    assert len(panels) >= 12
    for panel in panels:
        for target in panel["targets"]:
            used = set(re.findall(r"\b((?:qai|temporal)_[a-z_]+)", target["expr"]))
            assert used, target["expr"]
            assert used <= known, (panel["title"], used - known)


def test_the_dashboard_covers_the_issue() -> None:
    exprs = " ".join(
        target["expr"]
        for panel in json.loads(dashboard.dashboard_text())["panels"]
        for target in panel["targets"]
    )
    for metric in (
        "qai_runs_ended_total",
        "qai_model_tokens_total",
        "qai_model_call_seconds",
        "qai_sandboxes",
        "qai_api_request_seconds",
        "qai_sandbox_revival_seconds",
    ):
        assert metric in exprs
