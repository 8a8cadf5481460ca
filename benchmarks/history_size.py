"""How big does Temporal history get compared with the agent's transcript?

Runs one 40-iteration agent run (scripted model over HTTP, real local sandbox, real PostgreSQL,
time-skipping test server) where every iteration's tool output is 25 KB, then prints the sizes
of both workflows' histories, the transcript kept in PostgreSQL, their ratio (goal: under 1.5)
and the largest single event (goal: every payload under 256 KB).

    .venv/bin/python benchmarks/history_size.py [--iterations 40] [--output-kb 25]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from contract import agent_run_workflow_id, project_workflow_id  # noqa: E402
from runtime.temporal import ensure_search_attributes  # noqa: E402
from sandboxes.template import ensure_template  # noqa: E402
from scripted_llm import scripted_llm_server  # noqa: E402
from storage import transcript  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.workflows.conftest import TEST_SERVER, running_worker, settings_for  # noqa: E402


def script(iterations: int, output_kb: int) -> dict:
    blob = ("0123456789abcdef" * 64 * output_kb)[: output_kb * 1024]
    write = {
        "tool_calls": [
            {
                "name": "createOrUpdateFiles",
                "arguments": {
                    "files": [
                        {"path": "data/blob.txt", "content": blob},
                        {"path": "app/page.tsx", "content": "export default () => <p>ok</p>;\n"},
                    ]
                },
            }
        ]
    }
    read = {"tool_calls": [{"name": "readFiles", "arguments": {"files": ["data/blob.txt"]}}]}
    last = {**read, "content": "<task_summary>Read the blob many times.</task_summary>"}
    return {"default": {"turns": [write] + [read] * (iterations - 2) + [last]}}


async def history_bytes(env: WorkflowEnvironment, workflow_id: str) -> tuple[int, int, int]:
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    sizes = [event.ByteSize() for event in history.events]
    return sum(sizes), max(sizes), len(sizes)


async def main(iterations: int, output_kb: int) -> None:
    ensure_template(settings_for("http://unused/v1"))
    data_dir = Path(tempfile.mkdtemp(prefix="qai-bench-"))
    data_dir.chmod(0o711)
    postgres = EmbeddedPostgres(data_dir, durable=False)
    url = await postgres.start()
    try:
        await upgrade(url)
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
        )
        await ensure_search_attributes(env.client)
        try:
            async with (
                scripted_llm_server(script(iterations, output_kb)) as llm,
                running_worker(env, url, llm.base_url, qai_max_iterations=iterations) as harness,
            ):
                project_id, message_id = await harness.new_project("history benchmark")
                outcome = await harness.submit(project_id, message_id)
                async with harness.db.session() as session:
                    transcript_size = await transcript.transcript_chars(session, message_id)
                run_total, run_max, run_events = await history_bytes(
                    env, agent_run_workflow_id(message_id)
                )
                project_total, project_max, _ = await history_bytes(
                    env, project_workflow_id(project_id)
                )
        finally:
            await env.shutdown()
    finally:
        await postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    total = run_total + project_total
    print(f"run status:                {outcome.status.value} ({outcome.content[:60]})")
    print(f"iterations x tool output:  {iterations} x {output_kb} KB")
    print(f"transcript in PostgreSQL:  {transcript_size / 1024:,.1f} KB")
    print(f"agent-run history:         {run_total / 1024:,.1f} KB in {run_events} events")
    print(f"project history:           {project_total / 1024:,.1f} KB")
    print(f"history / transcript:      {total / transcript_size:.3f}  (goal < 1.5)")
    print(f"largest event:             {max(run_max, project_max) / 1024:,.1f} KB (goal < 256 KB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Temporal history size against transcript size")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--output-kb", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(main(args.iterations, args.output_kb))
