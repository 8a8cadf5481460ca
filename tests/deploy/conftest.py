"""Fixtures of the deployment tests: the workflow tests' Temporal test server."""

from tests.workflows.conftest import workflow_env  # noqa: F401  (a shared fixture)
