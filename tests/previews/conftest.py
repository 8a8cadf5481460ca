"""Preview fixtures: the workflow harness (real worker, sandboxes, scripted model) and small
real upstream servers standing in for a sandbox's dev server where no sandbox is needed."""

from __future__ import annotations

from tests.workflows.conftest import (  # noqa: F401  (fixtures the preview tests share)
    agent_harness,
    template_ready,
    workflow_env,
)
