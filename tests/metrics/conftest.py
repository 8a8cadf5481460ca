"""The API tests' fixtures: a real API in front of a real worker, PostgreSQL and Temporal."""

from tests.api.conftest import (  # noqa: F401  (fixtures these tests share)
    agent_harness,
    api_stack,
    template_ready,
    workflow_env,
)
