"""The offline demo: bring the local stack up, build an example app end to end, show the result.

With no OPENAI_API_KEY it serves the bundled scripted model (scripted_llm/scripts/demo.json) over
real HTTP and says so; with a key (and optionally OPENAI_BASE_URL) it uses the real model.
The stack keeps running afterwards so the preview can be opened; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
DEMO_SCRIPT = ROOT / "scripted_llm" / "scripts" / "demo.json"
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
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise SystemExit("demo: the scripted model server did not start")
    env["OPENAI_BASE_URL"] = base_url
    env["OPENAI_API_KEY"] = "scripted-demo"
    return process


def wait_for_stack(worker: subprocess.Popen[str], timeout: float = 600) -> None:
    """The worker prints 'qai is running.' once every part of the stack is healthy."""
    assert worker.stdout is not None
    deadline = time.monotonic() + timeout
    for line in worker.stdout:
        print(f"  | {line}", end="", flush=True)
        if line.startswith("qai is running."):
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"demo: the local stack did not come up (exit code {worker.poll()})")


def check_preview(url: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def stop(process: subprocess.Popen[str] | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--exit", action="store_true", help="stop the stack after the example")
    args = parser.parse_args()

    env = dict(os.environ)
    scripted = None
    worker = None
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
        )
        wait_for_stack(worker)

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
        ui_port = env.get("QAI_TEMPORAL_UI_PORT", "8233")
        namespace = env.get("TEMPORAL_NAMESPACE", "default")
        print(
            f"\n{fragment['title']}\n\n{result['content']}\n\n"
            f"Preview (HTTP {status}): {fragment['sandbox_url']}\n"
            f"Files:   {', '.join(sorted(fragment['files']))}\n"
            f"Web UI:  http://localhost:{ui_port}/namespaces/{namespace}/workflows/"
            f"{result['workflow_id']}\n"
            f"Project: {result['project_id']}  (follow up with: .venv/bin/python starter.py send "
            f'{result["project_id"]} "Add a dark mode toggle")\n',
            flush=True,
        )
        if args.exit:
            return 0
        say("the stack keeps running so you can open the preview; press Ctrl-C to stop")
        assert worker.stdout is not None
        for line in worker.stdout:
            print(f"  | {line}", end="", flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop(worker)
        stop(scripted)


if __name__ == "__main__":
    sys.exit(main())
