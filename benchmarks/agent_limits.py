"""The agent at real-model scale: what an edit costs, and a long run under a small window.

Each figure comes from real runs (scripted model over HTTP, real local sandbox and dev server,
real PostgreSQL, time-skipping test server); the scripted model reports usage as characters / 4
and rejects any request over its window with OpenAI's context-length error.

    .venv/bin/python benchmarks/agent_limits.py edit-cost [--lines 400]
        A follow-up that changes one line of a 400-line page, once with editFiles and once as a
        whole-file rewrite: completion tokens of each (goal: the edit under 10 % of the rewrite).

    .venv/bin/python benchmarks/agent_limits.py long-run [--iterations 40] [--read-kb 30]
            [--context-tokens 16000] [--output-tokens 8000]
        A run whose every iteration reads a 30 KB file under QAI_CONTEXT_TOKENS=16000: the
        largest request (goal: at most the window), elisions made, the run's status (goal:
        RESULT), and prefix stability: the median share of each request equal to the previous
        request's start (goal: at least 90 %).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from runtime.temporal import ensure_search_attributes  # noqa: E402
from sandboxes.template import ensure_template  # noqa: E402
from scripted_llm import scripted_llm_server  # noqa: E402
from storage import transcript  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.workflows.conftest import TEST_SERVER, running_worker, settings_for  # noqa: E402


@asynccontextmanager
async def stack(script: dict[str, Any], **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
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
                scripted_llm_server(script) as llm,
                running_worker(env, url, llm.base_url, **settings) as harness,
            ):
                yield harness, llm
        finally:
            await env.shutdown()
    finally:
        await postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def big_page(lines: int, title: str) -> str:
    body = [f'      <li className="py-1">Item {n}</li>' for n in range(lines - 12)]
    return "\n".join(
        [
            "export default function Page() {",
            "  return (",
            '    <main className="mx-auto max-w-2xl p-8">',
            f'      <h1 className="text-2xl font-bold">{title}</h1>',
            "      <ul>",
            *body,
            "      </ul>",
            "    </main>",
            "  );",
            "}",
            "",
        ]
    )


def summary(text: str) -> dict[str, Any]:
    return {"content": f"<task_summary>{text}</task_summary>"}


async def edit_cost(lines: int) -> None:
    old_title, new_title = "Inventory", "Stock list"
    page = big_page(lines, old_title)
    rewritten = page.replace(f">{old_title}<", f">{new_title}<")
    write = {
        "tool_calls": [
            {
                "name": "createOrUpdateFiles",
                "arguments": {"files": [{"path": "app/page.tsx", "content": page}]},
            }
        ]
    }
    edit = {
        "tool_calls": [
            {
                "name": "editFiles",
                "arguments": {
                    "edits": [
                        {
                            "path": "app/page.tsx",
                            "old": f'<h1 className="text-2xl font-bold">{old_title}</h1>',
                            "new": f'<h1 className="text-2xl font-bold">{new_title}</h1>',
                        }
                    ]
                },
            }
        ]
    }
    rewrite = {
        "tool_calls": [
            {
                "name": "createOrUpdateFiles",
                "arguments": {"files": [{"path": "app/page.tsx", "content": rewritten}]},
            }
        ]
    }
    script = {
        "conversations": [
            {"match": "BENCH-REWRITE", "turns": [rewrite, summary("Renamed the title.")]},
            {"match": "BENCH-EDIT", "turns": [edit, summary("Renamed the title.")]},
        ],
        "default": {"turns": [write, summary("An inventory page.")]},
    }
    async with stack(script, qai_fix_attempts=0) as (harness, _llm):
        project_id, first = await harness.new_project("BENCH build an inventory page")
        built = await harness.submit(project_id, first)
        if built.status.value != "RESULT":
            print(f"build run: {built.content[:200]}")
        results = {}
        for name, prompt in (("editFiles", "BENCH-EDIT"), ("rewrite", "BENCH-REWRITE")):
            message_id = await harness.add_message(project_id, f"{prompt}: rename the title")
            outcome = await harness.submit(project_id, message_id)
            async with harness.db.session() as session:
                entries = await transcript.chat_entries(session, message_id)
                usage = await transcript.run_usage(session, message_id)
            change = next(
                e for e in entries if e.role == "assistant" and e.message.get("tool_calls")
            )
            results[name] = (outcome.status.value, change.completion_tokens, usage)
            if outcome.status.value != "RESULT":
                print(f"{name} run: {outcome.content[:200]}")
    print(f"page:                       {lines} lines, {len(page):,} chars ({built.status.value})")
    for name, (status, tokens, usage) in results.items():
        print(
            f"{name + ' reply:':<27} {tokens:>6,} completion tokens "
            f"(run {usage['completion_tokens']:,} with summary and title; {status})"
        )
    share = results["editFiles"][1] / results["rewrite"][1]
    print(f"edit / rewrite:             {share:.1%}  (goal < 10 %)")


async def long_run(iterations: int, read_kb: int, window: int, output: int) -> None:
    # The data file is made by a command: writing 30 KB as tool arguments would itself pass
    # the output limit.
    records = read_kb * 1024 // 51  # 51 characters a line
    make = (
        f"mkdir -p data && for i in $(seq 1 {records}); do "
        'printf \'{"id": %05d, "name": "record %05d", "value": %03d},\\n\' $i $i $((i*7%1000)); '
        "done > data/records.txt && wc -c data/records.txt"
    )
    write = {
        "tool_calls": [
            {"name": "terminal", "arguments": {"command": make}},
            {
                "name": "createOrUpdateFiles",
                "arguments": {
                    "files": [
                        {"path": "app/page.tsx", "content": "export default () => <p>ok</p>;\n"}
                    ]
                },
            },
        ]
    }
    read = {"tool_calls": [{"name": "readFiles", "arguments": {"files": ["data/records.txt"]}}]}
    script = {
        "context_tokens": window,
        "default": {"turns": [write] + [read] * (iterations - 2) + [summary("Read the records.")]},
    }
    async with stack(
        script,
        qai_max_iterations=iterations,
        qai_context_tokens=window,
        qai_output_tokens=output,
        qai_fix_attempts=0,
    ) as (harness, llm):
        project_id, message_id = await harness.new_project("long run benchmark")
        outcome = await harness.submit(project_id, message_id)
        async with harness.db.session() as session:
            plan = await transcript.latest_plan(session, message_id, before=iterations + 100)
            usage = await transcript.run_usage(session, message_id)
    turns = [r for r in llm.requests() if r.kind == "turn"]
    refused = [r for r in turns if r.status != 200]
    largest = max(r.prompt_tokens + (r.max_tokens or 0) for r in turns)
    shares = [r.shared_prefix for r in turns if r.shared_prefix is not None]
    kept = [
        min(1.0, r.shared_prefix * _chars(r) / _chars(p))
        for p, r in itertools.pairwise(turns)
        if r.shared_prefix is not None and r.status == 200 and p.status == 200
    ]
    print(f"run status:                 {outcome.status.value} ({outcome.content[:70]})")
    print(f"iterations x read:          {iterations} x {read_kb} KB")
    print(f"window / output reserve:    {window:,} / {output:,} tokens")
    print(f"model calls:                {len(turns)} ({len(refused)} refused as too long)")
    print(f"largest request + max_tokens: {largest:,} tokens (goal <= {window:,})")
    print(f"elided tool results:        {len(plan['elided']) if plan else 0}")
    print(f"summarized early steps:     {len(plan['summarized']) if plan else 0}")
    print(f"prefix share (median):      {statistics.median(shares):.1%}  (goal >= 90 %)")
    print(f"previous request kept:      {statistics.median(kept):.1%} median")
    print(
        f"tokens:                     {usage['prompt_tokens']:,} prompt "
        f"({usage['cached_tokens']:,} cached), {usage['completion_tokens']:,} completion"
    )


def _chars(record: Any) -> int:
    return len(json.dumps(record.messages))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cost = commands.add_parser("edit-cost")
    cost.add_argument("--lines", type=int, default=400)
    run = commands.add_parser("long-run")
    run.add_argument("--iterations", type=int, default=40)
    run.add_argument("--read-kb", type=int, default=30)
    run.add_argument("--context-tokens", type=int, default=16_000)
    run.add_argument("--output-tokens", type=int, default=8_000)
    args = parser.parse_args()
    if args.command == "edit-cost":
        asyncio.run(edit_cost(args.lines))
    else:
        asyncio.run(
            long_run(args.iterations, args.read_kb, args.context_tokens, args.output_tokens)
        )
