"""Determinism guard: every committed history must replay against today's workflow code.

A change that would break running workflows fails here; make such changes behind
`workflow.patched`. Record new histories with

    QAI_RECORD_HISTORIES=1 .venv/bin/pytest tests/workflows/test_code_agent.py \
        tests/workflows/test_hardening.py tests/workflows/test_checks.py \
        tests/api/test_api_flow.py tests/previews/test_revival.py \
        -k "new_project or follow_up_reuses or two_messages or twice or iteration_limit \
        or expired or continues or killed_mid_run or fails_for_any or workspace_back \
        or compile_error or over_http or cancel_keeps or revives"

They were recorded from today's workflow code, which holds no `workflow.patched` branches:
a change that must keep running workflows going goes behind a new patch, and a release that
retires patches is deployed only after running workflows have drained (docs/operations.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_committed() -> None:
    names = [path.name for path in HISTORIES]
    assert any(name.endswith("-project.json") for name in names), names
    assert any(name.endswith("-agent-run.json") for name in names), names


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history_json = json.loads(path.read_text())
    history = WorkflowHistory.from_json(path.stem, history_json)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
