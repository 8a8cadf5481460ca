"""Browser-check fixtures: the workflow harness (real worker, sandboxes, scripted model)."""

from __future__ import annotations

from tests.workflows.conftest import (  # noqa: F401  (fixtures the preview tests share)
    agent_harness,
    template_ready,
    workflow_env,
)
