"""Publishing fixtures: the workflow harness and the API stack (real worker, sandboxes, model)."""

from __future__ import annotations

from tests.api.conftest import api_stack  # noqa: F401  (fixtures the publishing tests share)
from tests.ui.conftest import browser, new_page  # noqa: F401
from tests.workflows.conftest import (  # noqa: F401
    agent_harness,
    template_ready,
    workflow_env,
)
