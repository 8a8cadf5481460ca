"""Real stop signals leave nothing running: `worker.py --dev` and `make demo`, signalled while
the stack starts and once it runs, stop every process they started; a clean stop of `--dev` also
kills the sandboxes it started, and only those.

Each test runs the real programs in a data directory of its own, so that "nothing is left" can be
checked by looking for any process whose command line names that directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.settings import SandboxNetwork, Settings
from tests.stopping import (
    link_project_templates,
    naming,
    started,
)


@contextlib.contextmanager
def template_build_in_progress(data_dir: Path) -> Iterator[None]:
    """Hold the template build lock, as a build in another process does: start-up then waits
    in its template step, a moment that lasts until the lock goes (deterministic, no npm)."""
    templates = data_dir / "templates"
    templates.mkdir(parents=True)
    with (templates / ".nextjs.lock").open("a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        yield


WORKER = [sys.executable, "worker.py", "--dev"]
MAKE_DEMO = ["make", "--no-print-directory", "-o", "setup", "demo"]  # -o: setup already ran


@pytest.mark.parametrize(
    ("argv", "sig", "group", "moment"),
    [
        pytest.param(WORKER, signal.SIGHUP, False, "initialising embedded postgres", id="hup"),
        pytest.param(WORKER, signal.SIGINT, True, "embedded postgres ready", id="ctrl-c"),
        # The template step is a child process, waiting for the build another process holds.
        pytest.param(WORKER, signal.SIGTERM, False, "template.build.waiting", id="term"),
        # A killed make forwards nothing: the demo dies with its parent and stops the rest.
        pytest.param(MAKE_DEMO, signal.SIGKILL, False, "template.build.waiting", id="make"),
    ],
)
@pytest.mark.slow
async def test_signal_during_startup_stops_what_started(
    embedded_data_dir: Path, argv: list[str], sig: signal.Signals, group: bool, moment: str
) -> None:
    """The template step cannot finish (its lock is held), so a stop that waited for start-up to
    end would never come; every case stops before the stack is up."""
    # The worker alone needs a model setting; the demo starts its scripted model itself.
    env = {"OPENAI_API_KEY": "unused"} if argv is WORKER else {}
    with template_build_in_progress(embedded_data_dir):
        async with started(argv, embedded_data_dir, **env) as stack:
            await stack.wait_for(moment, limit=120)
            await stack.stop_with(sig, group=group)
            assert "qai is running." not in stack.text
            if argv is WORKER:
                assert stack.process.returncode == 0, stack.text[-3000:]
                assert f"signal={sig.name}" in stack.text  # it stopped, it was not killed
            else:
                assert "demo: SIGTERM: stopping the stack" in stack.text
                assert "SCRIPTED DEMO MODEL" in stack.text  # its server was running, and stopped
            stack.assert_nothing_left()
    assert not any(embedded_data_dir.glob("templates/.nextjs-*.building"))


@pytest.fixture
def sandbox_data_dir(embedded_data_dir: Path) -> Path:
    """A data dir whose template cache is the project's (built once, by `make setup`)."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("local sandboxes need root and bubblewrap")
    link_project_templates(embedded_data_dir)
    return embedded_data_dir


@pytest.mark.sandbox
@pytest.mark.slow
async def test_clean_stop_of_dev_kills_the_sandboxes_it_started(
    sandbox_data_dir: Path, tmp_path: Path
) -> None:
    """Once running, SIGTERM stops the stack and the worker's warm-pool sandbox; a sandbox that
    another process started in the same data dir is not the worker's, and stays."""
    from sandboxes.local.backend import LocalBackend
    from sandboxes.local.templates import LocalTemplate

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>not the worker's</h1>\n")
    for path in (tmp_path, static, static / "index.html"):
        os.chown(path, 201_000, 201_000)  # the sandbox user, through its user namespace
    others = LocalBackend(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            qai_data_dir=sandbox_data_dir,
            qai_sandbox_network=SandboxNetwork.NONE,
            qai_sandbox_pool_size=0,
        ),
        templates={
            "static": LocalTemplate(
                name="static",
                directory=static,
                start_cmd="exec python3 -m http.server 3000 --bind 127.0.0.1",
                port=3000,
            )
        },
    )
    other = await others.create("static", timeout=300)
    try:
        env = {"OPENAI_API_KEY": "unused", "QAI_SANDBOX_POOL_SIZE": "1"}
        async with started(WORKER, sandbox_data_dir, **env) as stack:
            await stack.wait_for("qai is running.", "pool sandbox started", limit=180)
            pooled = re.findall(r"pool sandbox started .*sandbox_id=(sbx-[0-9a-f]+)", stack.text)
            assert len(pooled) == 1, stack.text[-3000:]
            assert (sandbox_data_dir / "sandboxes" / pooled[0]).is_dir()

            await stack.stop_with(signal.SIGTERM)
            assert stack.process.returncode == 0, stack.text[-3000:]
            assert not (sandbox_data_dir / "sandboxes" / pooled[0]).exists()
            stack.assert_nothing_left(except_naming=other.sandbox_id)
        assert await other.is_running()
        assert others.list_ids() == [other.sandbox_id]
    finally:
        await other.kill()
    assert naming(str(sandbox_data_dir)) == {}
