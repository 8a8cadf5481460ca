"""One project driven entirely over HTTP: its run streamed to 50 clients, resumed by
Last-Event-ID, read back, zipped, followed up, restored to an earlier version and followed up
again; then a cancelled run and a deletion."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile

import httpx
import pytest

from sandboxes.base import SandboxNotFoundError
from storage import snapshots
from tests.api.conftest import Event, Stack, read_events, run_done
from tests.workflows.test_code_agent import page, summary_turn, terminal_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

CLIENTS = 50


def ids(events: list[Event]) -> list[int]:
    return [event.id for event in events]


async def wait_for_reply(stack: Stack, project_id: str, message_id: str) -> list[Event]:
    async with asyncio.timeout(300):
        return await read_events(stack.http, project_id, run_done(message_id))


async def test_a_project_over_http(api_stack) -> None:
    first, second = f"First {uuid.uuid4().hex[:6]}", f"Second {uuid.uuid4().hex[:6]}"
    script = {
        "conversations": [
            {
                "name": "check",
                "match": "yak",
                "turns": [terminal_turn("cat app/page.tsx"), summary_turn("Checked the page.")],
            },
            {
                "name": "change",
                "match": "zebra",
                "turns": [write_turn("app/page.tsx", page(second)), summary_turn("Changed it.")],
            },
        ],
        "default": {
            "title": "Hello Page",
            "turns": [
                {**write_turn("app/page.tsx", page(first)), "content": "Writing the page now."},
                terminal_turn("grep -c First app/page.tsx"),
                summary_turn("A hello page."),
            ],
        },
    }
    # The 50 clients share one address: let it hold them all (QAI_SSE_MAX_PER_CLIENT).
    async with api_stack(script, qai_sse_max_per_client=CLIENTS + 5) as stack:
        http = stack.http
        created = await http.post("/api/projects", json={"prompt": "Build a hello page"})
        assert created.status_code == 201, created.text
        body = created.json()
        project_id, message_id = body["project_id"], body["message_id"]
        assert body["workflow_id"] == f"agent-run-{message_id}"

        # 50 clients on the one run: each gets every event, in the same order.
        async with httpx.AsyncClient(
            base_url=stack.url, limits=httpx.Limits(max_connections=CLIENTS + 5)
        ) as many:
            async with asyncio.timeout(300):
                streams = await asyncio.gather(
                    *(read_events(many, project_id, run_done(message_id)) for _ in range(CLIENTS))
                )
        reference = streams[0]
        assert ids(reference) == list(range(1, len(reference) + 1))
        assert all(ids(stream) == ids(reference) for stream in streams)
        assert all(stream == reference for stream in streams)

        kinds = [(e.kind, e.data.get("phase") or e.data.get("role") or "") for e in reference]
        assert kinds[0] == ("message", "USER")
        assert ("run", "sandbox") in kinds and ("run", "thinking") in kinds
        assert ("run", "tool") in kinds and ("run", "saving") in kinds
        assert ("message", "ASSISTANT") in kinds and kinds[-1] == ("run", "done")
        tools = [e.data for e in reference if e.kind == "tool"]
        assert [(t["name"], t["ok"]) for t in tools] == [
            ("createOrUpdateFiles", True),
            ("terminal", True),
        ]
        thinking = [e.data["iteration"] for e in reference if e.data.get("phase") == "thinking"]
        assert thinking == [1, 2, 3]
        tokens = [e.data for e in reference if e.kind == "token"]
        assert "".join(t["text"] for t in tokens if t["iteration"] == 1) == "Writing the page now."
        assert "".join(t["text"] for t in tokens if t["iteration"] == 3) == (
            "All done.\n<task_summary>\nA hello page.\n</task_summary>"
        )
        # The streamed call stored its reply once.
        assert all(count == 1 for count in stack.llm.completed_counts().values())

        # Resuming after any event gives exactly the rest, nothing twice.
        middle = reference[len(reference) // 2].id
        rest = await read_events(
            http,
            project_id,
            lambda got: got[-1].id == reference[-1].id,
            last_event_id=middle,
        )
        assert ids(rest) == [e.id for e in reference if e.id > middle]

        project = (await http.get(f"/api/projects/{project_id}")).json()
        assert [(m["role"], m["type"]) for m in project["messages"]] == [
            ("USER", "RESULT"),
            ("ASSISTANT", "RESULT"),
        ]
        assert project["running"] is None
        # Usage: per reply and for the project, the sums of what the model server reported.
        reported = [r.usage for r in stack.llm.requests() if r.completed]
        expected = {
            "prompt_tokens": sum(u["prompt_tokens"] for u in reported),
            "completion_tokens": sum(u["completion_tokens"] for u in reported),
            "cached_tokens": sum(u["prompt_tokens_details"]["cached_tokens"] for u in reported),
            "total_tokens": sum(u["total_tokens"] for u in reported),
            "model_calls": len(reported),
        }
        assert expected["prompt_tokens"] > 0 and expected["model_calls"] >= 2
        assert project["usage"] == project["messages"][1]["usage"] == expected
        fragment = project["messages"][1]["fragment"]
        assert fragment["paths"] == ["app/page.tsx"] and fragment["title"] == "Hello Page"
        first_fragment = fragment["fragment_id"]

        full = (await http.get(f"/api/fragments/{first_fragment}")).json()
        assert full["files"] == {"app/page.tsx": page(first)}
        assert full["message_id"] == project["messages"][1]["message_id"]

        archive = await http.get(f"/api/fragments/{first_fragment}/archive")
        assert archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
            names = zipped.namelist()
            folder = names[0].split("/")[0]
            assert zipped.read(f"{folder}/app/page.tsx").decode() == page(first)
            assert f"{folder}/package.json" in names
            assert f"{folder}/components/ui/button.tsx" in names
            assert not any("node_modules" in name for name in names)

        listing = (await http.get("/api/projects")).json()
        [row] = [p for p in listing["projects"] if p["project_id"] == project_id]
        assert row["last_message"]["role"] == "ASSISTANT"
        assert row["preview_url"] == fragment["preview_url"]

        # A follow-up changes the page; restoring the first version brings it back.
        sent = await http.post(f"/api/projects/{project_id}/messages", json={"prompt": "zebra"})
        assert sent.status_code == 202
        await wait_for_reply(stack, project_id, sent.json()["message_id"])
        restored = await http.post(f"/api/fragments/{first_fragment}/restore")
        assert restored.status_code == 202
        restore_id = restored.json()["message_id"]
        async with asyncio.timeout(300):
            await read_events(
                http,
                project_id,
                lambda got: any(e.data.get("message_id") == restore_id for e in got),
            )
        project = (await http.get(f"/api/projects/{project_id}")).json()
        restore_message = project["messages"][-1]
        assert restore_message["message_id"] == restore_id
        assert (restore_message["role"], restore_message["type"]) == ("ASSISTANT", "RESULT")
        assert restore_message["content"].startswith("Restored version “Hello Page”")
        restored_files = await http.get(
            f"/api/fragments/{restore_message['fragment']['fragment_id']}"
        )
        assert restored_files.json()["files"] == {"app/page.tsx": page(first)}

        # The next follow-up works on the restored version.
        sent = await http.post(f"/api/projects/{project_id}/messages", json={"prompt": "yak"})
        await wait_for_reply(stack, project_id, sent.json()["message_id"])
        project = (await http.get(f"/api/projects/{project_id}")).json()
        last = project["messages"][-1]
        assert last["type"] == "RESULT", last["content"]
        checked = await http.get(f"/api/fragments/{last['fragment']['fragment_id']}")
        assert checked.json()["files"] == {"app/page.tsx": page(first)}
        await stack.harness.record_histories(
            uuid.UUID(project_id), uuid.UUID(sent.json()["message_id"])
        )


async def test_cancel_keeps_the_work_and_delete_removes_everything(api_stack) -> None:
    marker = f"Cancel {uuid.uuid4().hex[:6]}"
    script = {
        "default": {
            "turns": [
                write_turn("app/page.tsx", page(marker)),
                {**terminal_turn("sleep 1"), "delay": 600},
            ]
        }
    }
    async with api_stack(script) as stack:
        http = stack.http
        created = (await http.post("/api/projects", json={"prompt": "Something slow"})).json()
        project_id, message_id = created["project_id"], created["message_id"]
        async with asyncio.timeout(300):
            seen = await read_events(
                http,
                project_id,
                lambda got: (
                    got[-1].data.get("phase") == "thinking" and got[-1].data["iteration"] == 2
                ),
            )
        running = (await http.get(f"/api/projects/{project_id}")).json()["running"]
        assert running["phase"] == "thinking" and running["iteration"] == 2
        cancelled = await http.post(f"/api/projects/{project_id}/cancel")
        assert cancelled.status_code == 202
        async with asyncio.timeout(300):
            rest = await read_events(
                http, project_id, run_done(message_id), last_event_id=seen[-1].id
            )
        [error] = [e for e in rest if e.kind == "error"]
        assert error.data["content"].startswith("Cancelled")
        project = (await http.get(f"/api/projects/{project_id}")).json()
        reply = project["messages"][-1]
        assert (reply["role"], reply["type"]) == ("ASSISTANT", "ERROR")
        assert reply["content"].startswith("Cancelled")
        assert project["running"] is None
        # What the run wrote before the cancel is kept as the project's workspace.
        async with stack.harness.db.session() as session:
            workspace = await snapshots.latest(session, uuid.UUID(project_id))
        assert workspace is not None
        assert workspace.files["app/page.tsx"].decode() == page(marker)
        await stack.harness.record_histories(uuid.UUID(project_id), uuid.UUID(message_id))
        status = await stack.harness.project_status(uuid.UUID(project_id))
        assert status.sandbox_id is not None

        deleted = await http.delete(f"/api/projects/{project_id}")
        assert deleted.status_code == 204
        assert (await http.get(f"/api/projects/{project_id}")).status_code == 404
        with pytest.raises(SandboxNotFoundError):
            sandbox = await stack.harness.services.sandboxes.connect(status.sandbox_id)
            if not await sandbox.is_running():
                raise SandboxNotFoundError(status.sandbox_id)
