"""Retries follow the error, and what users read is plain words.

A sandbox that is slow to become ready (a loaded host) is retried; a template that cannot start
is not. Either way the message a user reads names no host path, no supervisor log line and no
exception class: that detail stays in the logs and the failure's cause, for operators.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import sandbox_failure
from activities.sandbox import SandboxActivities
from activities.sandbox_service import SandboxService
from activities.services import Services
from contract import AcquireSandboxInput
from runtime.settings import Settings
from sandboxes.base import (
    CommandFailedError,
    CommandResult,
    InvalidPathError,
    SandboxError,
    SandboxNotFoundError,
    SandboxStartTimeoutError,
    SandboxTemplateError,
    SandboxTimeoutError,
    SandboxUnavailableError,
    WorkspaceError,
)
from sandboxes.local import backend as backend_module
from sandboxes.local.backend import LocalBackend
from sandboxes.local.templates import LocalTemplate
from storage.db import Database
from tests.sandboxes.conftest import TINY_START

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Errno|Traceback")

SLOW_SUPERVISOR = f"""
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {str(PROJECT_ROOT)!r})
from sandboxes.local.layout import Layout, process_start_time, update_state

# A supervisor that is alive but never gets envd ready, as on a host too loaded to start one in
# time. The parent (which the backend waits for) exits once the pid is recorded, as the real one.
layout = Layout(Path(sys.argv[1]))
r, w = os.pipe()
if os.fork() > 0:
    os.close(w)
    os.read(r, 1)
    os._exit(0)
os.close(r)
pid = os.getpid()
me = {{"pid": pid, "start_time": process_start_time(pid)}}
update_state(layout.state, lambda s: s.update(supervisor=me))
os.write(w, b"x")
time.sleep(120)  # the backend's kill ends it long before
"""


def assert_plain(text: str, *host_paths: Path) -> None:
    """Words for a user: no host path, no supervisor log, no exception name."""
    for path in host_paths:
        assert str(path) not in text
    assert "/work/" not in text and "sbx-" not in text and "supervisor" not in text
    assert not EXCEPTION_NAME.search(text), text


@pytest.fixture
async def services(
    make_settings: Callable[..., Settings], db: Database
) -> AsyncIterator[Callable[[LocalTemplate], Services]]:
    llm = AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")  # never called here

    def make(template: LocalTemplate) -> Services:
        settings = make_settings()
        # The template stands in for the default one, which `acquire_sandbox` asks for.
        backend = LocalBackend(settings, templates={"nextjs": template})
        return Services(settings=settings, db=db, sandboxes=backend, llm=llm)

    try:
        yield make
    finally:
        await llm.close()


async def acquire(services: Services) -> ApplicationError:
    """Run `acquire_sandbox` once and return the ApplicationError it raised."""
    input = AcquireSandboxInput(project_id=uuid.uuid4(), run_id=uuid.uuid4())
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"agent-run-{input.run_id}")
    with pytest.raises(ApplicationError) as caught:
        await env.run(
            SandboxActivities(
                services, SandboxService(services, "test-host-queue")
            ).acquire_sandbox,
            input,
        )
    return caught.value


@pytest.mark.sandbox
async def test_a_template_that_cannot_start_is_not_retried(
    services: Callable[[LocalTemplate], Services], tmp_path: Path
) -> None:
    missing = tmp_path / "never-built"  # the overlay mount fails and the supervisor dies
    broken = LocalTemplate(name="nextjs", directory=missing, start_cmd=TINY_START, port=3000)
    svc = services(broken)
    backend = svc.sandboxes
    assert isinstance(backend, LocalBackend)
    before = set(backend.list_ids())

    with pytest.raises(SandboxTemplateError) as caught:
        await backend.create("nextjs", timeout=60)
    assert caught.value.retryable is False
    assert "failed to start" in str(caught.value)  # the log tail stays, for operators

    failure = await acquire(svc)
    assert failure.non_retryable
    assert "could not start from its template" in failure.message
    assert isinstance(failure.__cause__, SandboxTemplateError)
    assert_plain(failure.message, svc.settings.data_dir, missing)
    assert set(backend.list_ids()) == before


@pytest.mark.sandbox
async def test_a_sandbox_slow_to_become_ready_is_retried(
    services: Callable[[LocalTemplate], Services],
    tiny_template: LocalTemplate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_pids_matching: Callable[[str], list[int]],
) -> None:
    script = tmp_path / "slow_supervisor.py"
    script.write_text(SLOW_SUPERVISOR)
    monkeypatch.setattr(backend_module, "SUPERVISOR", script)
    monkeypatch.setattr(backend_module, "READY_TIMEOUT", 0.5)
    svc = services(tiny_template)
    backend = svc.sandboxes
    assert isinstance(backend, LocalBackend)
    before = set(backend.list_ids())

    with pytest.raises(SandboxStartTimeoutError) as caught:
        await backend.create("nextjs", timeout=60)
    assert caught.value.retryable is True
    assert isinstance(caught.value, SandboxTimeoutError)

    failure = await acquire(svc)
    assert not failure.non_retryable
    assert "took too long to start" in failure.message
    assert_plain(failure.message, svc.settings.data_dir, script)
    # The slow sandbox was killed, not left starting: the retry starts afresh.
    assert set(backend.list_ids()) == before
    assert host_pids_matching(str(script)) == []


LEAKY = "/work/main/.qai/sandboxes/sbx-0123456789ab"
ERRORS: list[tuple[SandboxError, bool, str]] = [
    (SandboxNotFoundError(f"no sandbox sbx-0123456789ab ({LEAKY})"), True, "is gone"),
    (SandboxStartTimeoutError(f"not ready: {LEAKY}/supervisor.log"), False, "too long to start"),
    (SandboxTimeoutError("sandbox sbx-0123456789ab did not answer write"), False, "in time"),
    (
        SandboxTemplateError(f"failed to start: supervisor failed: OSError(22, {LEAKY}/merged)"),
        True,
        "could not start from its template",
    ),
    (WorkspaceError("disk full: /home/user/a", reason="no_space"), True, "disk is full"),
    (InvalidPathError("path '../x' is outside /home/user"), True, "file path was refused"),
    (CommandFailedError(CommandResult("", "Traceback", 1)), True, "command failed"),
    (SandboxUnavailableError(f"[Errno 111] {LEAKY}/envd.sock"), False, "could not be reached"),
    (
        SandboxUnavailableError(f"{LEAKY}/envd.sock is not a socket", retryable=False),
        True,
        "could not be used",
    ),
]


@pytest.mark.parametrize(
    ("error", "non_retryable", "words"), ERRORS, ids=[type(e).__name__ for e, _, _ in ERRORS]
)
def test_users_read_plain_words_and_retries_follow_the_error(
    error: SandboxError, non_retryable: bool, words: str
) -> None:
    failure = sandbox_failure(error, "running createOrUpdateFiles")
    assert failure.non_retryable is non_retryable
    assert words in failure.message
    assert_plain(failure.message, Path(LEAKY))
    assert "OSError" not in failure.message and "Errno" not in failure.message
