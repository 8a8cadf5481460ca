"""The offline demo: bring the local stack up, build an example app end to end, show the result.

With no OPENAI_API_KEY it serves the bundled scripted model (scripted_llm/scripts/demo.json) over
real HTTP and says so; with a key (and optionally OPENAI_BASE_URL) it uses the real model.
The stack keeps running afterwards so the preview can be opened. Ctrl-C, SIGTERM or SIGHUP stops
everything, and so does the death of the parent (`make`): the demo then stops its children, and
the worker stops the stack and the app's sandbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runtime.preview_urls import loopback_target  # noqa: E402 - needs ROOT on sys.path
from runtime.processes import (  # noqa: E402 - needs ROOT on sys.path
    StopRequested,
    die_with_parent,
    ignore_stop_signals,
    parent_death_signal,
    raise_on_stop_signals,
)

PYTHON = str(ROOT / ".venv" / "bin" / "python")
DEMO_SCRIPT = ROOT / "scripted_llm" / "scripts" / "demo.json"
WORKER_STOP_GRACE = 60.0
"""Seconds the worker gets to stop the stack and its sandboxes before it is killed."""
BANNER_LINE = re.compile(r"^  (?P<name>API|Temporal Web UI): +(?P<url>https?://\S+)")
"""A line of the worker's 'qai is running.' banner that gives an address the demo repeats."""
DEFAULT_PROMPT = (
    "Build a todo app: add tasks, mark them done, delete them, filter all/active/done, "
    "and show how many are left."
)


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def start_scripted_model(env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [PYTHON, "-m", "scripted_llm", "--script", str(DEMO_SCRIPT), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=parent_death_signal(signal.SIGTERM),
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise SystemExit("demo: the scripted model server did not start")
    env["OPENAI_BASE_URL"] = base_url
    env["OPENAI_API_KEY"] = "scripted-demo"
    return process


class WorkerOutput(threading.Thread):
    """Echoes the worker's output as it comes and notes the addresses the stack prints.

    Read all the time, not only while waiting: a full pipe would block the worker, even while
    it stops.
    """

    def __init__(self, worker: subprocess.Popen[str]) -> None:
        super().__init__(name="worker-output", daemon=True)
        assert worker.stdout is not None
        self.stream = worker.stdout
        self.up = False
        self.api_url = ""
        """The HTTP API's (and web UI's) address, from the worker's `API:` line."""
        self.temporal_ui_url = ""
        """The Temporal Web UI's address, from the worker's `Temporal Web UI:` line."""
        self.settled = threading.Event()
        """Set once the stack is up (the worker prints 'qai is running.' and its addresses) or
        the output ended."""

    def run(self) -> None:
        for line in self.stream:
            print(f"  | {line}", end="", flush=True)
            if line.startswith("qai is running."):
                self.up = True
            elif self.up and (found := BANNER_LINE.match(line)):
                if found["name"] == "API":  # the banner's last address
                    self.api_url = found["url"]
                    self.settled.set()
                else:
                    self.temporal_ui_url = found["url"]
        self.settled.set()


def wait_for_stack(
    worker: subprocess.Popen[str], output: WorkerOutput, timeout: float = 600
) -> None:
    if not output.settled.wait(timeout) or not output.api_url:
        raise SystemExit(f"demo: the local stack did not come up (exit code {worker.poll()})")


def check_preview(url: str, timeout: float = 120) -> int:
    """The preview's HTTP status once it answers (the gateway says 503 while it starts)."""
    target, host = loopback_target(url)
    request = urllib.request.Request(target, headers={"Host": host} if host else {})
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def stop(process: subprocess.Popen[str] | None, name: str, grace: float = 30.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        say(f"the {name} did not stop within {grace:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--exit", action="store_true", help="stop the stack after the example")
    args = parser.parse_args()
    # `make demo` forwards SIGTERM but not a hangup, and a killed make forwards nothing: the
    # demo's children are in sessions of their own, so stopping them is the demo's job.
    die_with_parent(signal.SIGTERM)
    raise_on_stop_signals()

    env = dict(os.environ)
    scripted = None
    worker = None
    output = None
    try:
        if not env.get("OPENAI_API_KEY"):
            scripted = start_scripted_model(env)
            say(
                "no OPENAI_API_KEY is set, so a SCRIPTED DEMO MODEL is in use: it replays "
                f"{DEMO_SCRIPT.relative_to(ROOT)} over the OpenAI API at {env['OPENAI_BASE_URL']}."
                " Set OPENAI_API_KEY (and OPENAI_BASE_URL) to use a real model."
            )
            env.setdefault("QAI_MODEL", "scripted")
            env.setdefault("QAI_TITLE_MODEL", "scripted")
        else:
            say(f"using the model {env.get('QAI_MODEL', 'gpt-4.1')} with your OPENAI_API_KEY")

        say("starting the local stack (python worker.py --dev)")
        worker = subprocess.Popen(
            [PYTHON, "worker.py", "--dev"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGTERM),
        )
        output = WorkerOutput(worker)
        output.start()
        wait_for_stack(worker, output)

        say(f"prompt: {args.prompt}")
        starter = subprocess.run(
            [PYTHON, "starter.py", "new", args.prompt, "--json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if not starter.stdout.strip():
            say(f"the starter failed (exit code {starter.returncode})")
            return 1
        result = json.loads(starter.stdout)
        if result["status"] != "RESULT":
            say(f"the run ended in an error: {result['content']}")
            return 1
        fragment = result["fragment"]
        status = check_preview(fragment["sandbox_url"])
        project_id = result["project_id"]
        api = output.api_url.rstrip("/")
        namespace = env.get("TEMPORAL_NAMESPACE", "default")
        print(
            f"\n{fragment['title']}\n\n{result['content']}\n\n"
            f"Open:    {api}/projects/{project_id}  (qai's web UI: follow up there)\n"
            f"Preview (HTTP {status}): {fragment['sandbox_url']}\n"
            f"Files:   {', '.join(sorted(fragment['files']))}\n"
            f"API:     {api}/api/projects/{project_id}  (docs: {api}/docs)\n"
            f"Temporal Web UI: {output.temporal_ui_url.rstrip('/')}/namespaces/{namespace}"
            f"/workflows/{result['workflow_id']}\n"
            f"CLI:     .venv/bin/python starter.py send {project_id} "
            '"Add a dark mode toggle"\n',
            flush=True,
        )
        if args.exit:
            return 0
        say("the stack keeps running so you can open the preview; press Ctrl-C to stop")
        code = worker.wait()
        say(f"the stack stopped by itself (exit code {code})")
        return 0 if code == 0 else 1
    except StopRequested as stopped:
        say(f"{stopped.signal.name}: stopping the stack")
        return 0
    finally:
        ignore_stop_signals()  # the cleanup is what leaves nothing running: finish it
        stop(worker, "worker", grace=WORKER_STOP_GRACE)
        if output is not None:
            output.join(timeout=5)  # the worker's last lines
        stop(scripted, "scripted model server")


if __name__ == "__main__":
    sys.exit(main())
