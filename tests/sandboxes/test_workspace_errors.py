"""Requests the workspace refuses reach the model as tool results, on a real local sandbox.

Each case used to end the whole run ("The sandbox failed while running createOrUpdateFiles: Is a
directory: /home/user/app"). Now each is an error result naming the path, what went wrong, what
was and was not written, and what the model can do; and no text shows a host path or an
exception's name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from temporalio.testing import ActivityEnvironment

from activities.services import Services
from activities.tools import ToolActivities
from agent.tools import ToolOutcome, execute_tool
from contract import ToolCallInput
from sandboxes.base import CommandFailedError, WorkspaceError, WriteEntry
from sandboxes.local.backend import LocalBackend
from sandboxes.local.sandbox import LocalSandbox
from storage import queries, transcript
from storage.db import Database

pytestmark = pytest.mark.sandbox

EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Errno|Traceback")


def assert_plain(text: str, backend: LocalBackend) -> None:
    """No host path, no exception name: only what the model or a user can act on."""
    data_dir = str(Path(backend.settings.data_dir).resolve())
    assert data_dir not in text and str(backend.root) not in text
    assert "sandboxes/sbx-" not in text
    assert not EXCEPTION_NAME.search(text), text


async def write(sandbox: LocalSandbox, files: dict[str, str]) -> ToolOutcome:
    arguments = {"files": [{"path": path, "content": text} for path, text in files.items()]}
    return await execute_tool(sandbox, "createOrUpdateFiles", json.dumps(arguments))


async def read(sandbox: LocalSandbox, paths: list[str]) -> tuple[ToolOutcome, dict[str, Any]]:
    outcome = await execute_tool(sandbox, "readFiles", json.dumps({"files": paths}))
    return outcome, {item["path"]: item for item in json.loads(outcome.content)}


async def run(sandbox: LocalSandbox, command: str) -> None:
    await sandbox.commands.run(command, timeout=60)


async def test_writing_onto_a_directory_names_the_path_and_what_was_written(
    sandbox: LocalSandbox, backend: LocalBackend
) -> None:
    outcome = await write(sandbox, {"first.txt": "one", "notes": "x", "last.txt": "three"})

    assert not outcome.ok
    assert "could not write notes: notes is a directory" in outcome.content
    assert "notes/page.tsx" in outcome.content  # what to do instead
    assert "Written: first.txt." in outcome.content
    assert "Not written: notes, last.txt." in outcome.content
    assert outcome.written == {"first.txt": "one"}  # recorded as the run's files
    assert await sandbox.files.read("first.txt") == "one"
    assert not await sandbox.files.exists("last.txt")
    assert await sandbox.files.exists("notes/readme.txt")  # the directory is untouched
    assert_plain(outcome.content, backend)


@pytest.mark.parametrize("path", ["notes/readme.txt/x.ts", "notes/readme.txt/deeper/x.ts"])
async def test_a_path_under_a_file_says_which_part_is_a_file(
    sandbox: LocalSandbox, backend: LocalBackend, path: str
) -> None:
    outcome = await write(sandbox, {path: "export {}\n"})

    assert not outcome.ok
    assert f"notes/readme.txt is a file, so {path} cannot be created inside it" in outcome.content
    assert "Written: nothing." in outcome.content
    assert await sandbox.files.read("notes/readme.txt") == "from the template\n"
    assert_plain(outcome.content, backend)


async def test_permission_denied_is_an_error_the_model_can_fix(
    sandbox: LocalSandbox, backend: LocalBackend
) -> None:
    await run(sandbox, "mkdir locked && echo old > locked/kept.txt && chmod 555 locked")

    outcome = await write(sandbox, {"locked/new.ts": "x"})

    assert not outcome.ok
    assert "permission denied: the sandbox user may not write locked/new.ts" in outcome.content
    assert "chmod u+w" in outcome.content
    assert_plain(outcome.content, backend)

    await run(sandbox, "chmod u+w locked")  # what the hint says: the model can recover
    assert (await write(sandbox, {"locked/new.ts": "x"})).ok

    await run(sandbox, "chmod 000 locked/kept.txt")
    outcome, results = await read(sandbox, ["locked/kept.txt", "locked/new.ts"])
    assert not outcome.ok
    assert "permission denied" in results["locked/kept.txt"]["error"]
    assert results["locked/new.ts"]["content"] == "x"
    assert_plain(outcome.content, backend)


async def test_a_full_disk_is_an_error_result_and_keeps_old_contents(
    sandbox: LocalSandbox, backend: LocalBackend
) -> None:
    assert (await write(sandbox, {"app/keep.ts": "old"})).ok
    # The workspace is a tmpfs of QAI_SANDBOX_DISK_MB (64 MiB here): fill it to the last page.
    with pytest.raises(CommandFailedError, match="code 1"):
        await run(sandbox, "head -c 100M /dev/zero > filler")

    outcome = await write(sandbox, {"app/keep.ts": "new " * 25_000, "app/other.ts": "x"})

    assert not outcome.ok
    assert "could not write app/keep.ts: the sandbox's disk is full (64 MiB" in outcome.content
    assert "du -sh" in outcome.content  # how to find what to delete
    assert "Written: nothing." in outcome.content
    assert "Not written: app/keep.ts, app/other.ts." in outcome.content
    assert await sandbox.files.read("app/keep.ts") == "old"  # space is reserved before writing
    assert not await sandbox.files.exists("app/other.ts")
    assert_plain(outcome.content, backend)

    await run(sandbox, "rm filler")
    assert (await write(sandbox, {"app/keep.ts": "new", "app/other.ts": "x"})).ok


async def test_read_files_reports_binary_and_oversized_files_and_returns_the_rest(
    sandbox: LocalSandbox, backend: LocalBackend
) -> None:
    await sandbox.files.write("text.txt", "hello\n")
    await sandbox.files.write("public/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    await sandbox.files.write("latin1.txt", b"caf\xe9\n")
    await run(sandbox, "truncate -s 65M huge.log")  # sparse: takes no space on the 64 MiB disk

    outcome, results = await read(
        sandbox,
        ["text.txt", "public/logo.png", "latin1.txt", "huge.log", "missing.txt", "notes"],
    )

    assert not outcome.ok
    assert outcome.brief == "read 1 of 6 file(s)"
    assert results["text.txt"] == {"path": "text.txt", "content": "hello\n"}
    assert results["public/logo.png"]["error"] == "binary file, 16 bytes; cannot be shown as text"
    assert results["latin1.txt"]["error"] == "binary file, 5 bytes; cannot be shown as text"
    huge = results["huge.log"]["error"]
    assert "huge.log is 68157440 bytes, over the 64 MiB that can be read at once" in huge
    assert "head" in huge  # what to do instead
    assert results["missing.txt"]["error"] == "no such file"
    assert results["notes"]["error"].startswith("notes is a directory")
    assert "\ufffd" not in outcome.content  # no replacement-character garbage
    assert_plain(outcome.content, backend)


async def test_the_host_side_error_carries_reason_path_and_written(sandbox: LocalSandbox) -> None:
    """The Files API itself (used by hydration too) raises one model-correctable error class."""
    with pytest.raises(WorkspaceError) as caught:
        await sandbox.files.write_files([WriteEntry("a.txt", "a"), WriteEntry("notes", "b")])
    assert caught.value.reason == "is_a_directory"
    assert caught.value.path == "notes"
    assert caught.value.written == ("a.txt",)
    assert caught.value.retryable is False


async def test_the_tool_activity_hands_the_error_to_the_model_and_the_run_goes_on(
    sandbox: LocalSandbox, backend: LocalBackend, db: Database
) -> None:
    """The issue's own case: this activity used to fail, and with it the whole run."""
    call = {
        "id": "call-1",
        "type": "function",
        "function": {
            "name": "createOrUpdateFiles",
            "arguments": json.dumps(
                {"files": [{"path": "app", "content": "x"}, {"path": "app2.ts", "content": "y"}]}
            ),
        },
    }
    async with db.session() as session:
        _, message = await queries.create_project(session, "errors", "Write onto a directory")
        await transcript.append_entry(
            session,
            message.id,
            role="assistant",
            iteration=1,
            message={"role": "assistant", "content": None, "tool_calls": [call]},
        )
        await session.commit()
    await sandbox.commands.run("mkdir -p app", timeout=30)
    llm = AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")  # never called here
    services = Services(settings=backend.settings, db=db, sandboxes=backend, llm=llm)
    try:
        result = await ActivityEnvironment().run(
            ToolActivities(services).run_tool,
            ToolCallInput(
                run_id=message.id,
                sandbox_id=sandbox.sandbox_id,
                iteration=1,
                tool_call_id="call-1",
                project_id=message.project_id,
            ),
        )
    finally:
        await llm.close()

    assert (result.ok, result.brief) == (False, "write failed: is a directory")
    async with db.session() as session:
        stored = await transcript.tool_result(session, message.id, "call-1")
    assert stored is not None
    assert "could not write app: app is a directory" in stored.message["content"]
    assert_plain(stored.message["content"], backend)
