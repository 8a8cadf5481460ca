"""A check that cannot run is `skipped` with its reason; it never fails the run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from temporalio.testing import ActivityEnvironment

from activities.checks import CheckActivities, run_tsc
from agent.checks import CheckStatus
from contract import CheckInput, LogCheckInput
from sandboxes.local.backend import LocalBackend

pytestmark = pytest.mark.sandbox


async def test_tsc_missing_is_skipped_with_its_reason(backend: LocalBackend) -> None:
    sandbox = await backend.create("tiny", timeout=120)
    try:
        result = await run_tsc(sandbox)
    finally:
        await sandbox.kill()
    assert result.status == CheckStatus.SKIPPED
    assert result.reason is not None and result.reason.startswith("tsc could not run (exit ")


async def test_checks_of_a_gone_sandbox_are_skipped(backend: LocalBackend) -> None:
    sandbox = await backend.create("tiny", timeout=120)
    await sandbox.kill()
    checks = CheckActivities(SimpleNamespace(sandboxes=backend))  # type: ignore[arg-type]
    env = ActivityEnvironment()
    target = CheckInput(
        project_id="00000000-0000-0000-0000-000000000001",  # type: ignore[arg-type]
        run_id="00000000-0000-0000-0000-000000000002",  # type: ignore[arg-type]
        sandbox_id=sandbox.sandbox_id,
    )
    types = await env.run(checks.check_types, target)
    log = await env.run(
        checks.check_server_log, LogCheckInput(sandbox_id=sandbox.sandbox_id, since=0)
    )
    for result in (types, log):
        assert result.status == CheckStatus.SKIPPED
        assert result.reason == "the sandbox is gone"
