"""One real project, end to end: imported from a repository on a local `git http-backend`,
built on by the agent in a real sandbox, and read back with `git clone`, `git pull` and a push."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from repos.history import remove_repository
from repos.tree import BUILD_ONLY, template_entries
from sandboxes.manifest import template_source
from tests.api.conftest import Stack, read_events, run_done
from tests.repos.git_server import agit, git_server, publish
from tests.workflows.test_code_agent import page, summary_turn, terminal_turn, write_turn

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

TOKEN = "s3cret-remote-token"
LOG = "--format=%s%x1f%b%x1e"


async def answered(stack: Stack, project_id: str, message_id: str) -> list:
    async with asyncio.timeout(300):
        return await read_events(stack.http, project_id, run_done(message_id))


async def test_import_follow_up_clone_pull_push(api_stack, tmp_path: Path) -> None:
    imported_marker = f"Imported {uuid.uuid4().hex[:6]}"
    first, second = f"First {uuid.uuid4().hex[:6]}", f"Second {uuid.uuid4().hex[:6]}"
    app = {
        path: entry.data
        for path, entry in template_entries(template_source()).items()
        if path not in BUILD_ONLY and entry.mode != "120000"
    }
    app["app/page.tsx"] = page(imported_marker).encode()
    app["README.md"] = b"# The shop\n"
    script = {
        "conversations": [
            {
                "name": "second",
                "match": "zebra",
                "turns": [write_turn("app/page.tsx", page(second)), summary_turn("Second.")],
            }
        ],
        "default": {
            "title": "Imported Shop",
            "turns": [
                terminal_turn(f"grep -c '{imported_marker}' app/page.tsx && test -f README.md"),
                write_turn("app/page.tsx", page(first)),
                summary_turn("Changed the heading."),
            ],
        },
    }
    with git_server(tmp_path / "served", password=TOKEN) as server:
        commit = await publish(server, "shop", app, tmp_path)
        allowed = f"127.0.0.1:{server.port}"
        async with api_stack(script, qai_git_allowed_hosts=allowed) as stack:
            http = stack.http
            url = f"{server.base}/shop.git"
            created = await http.post(
                "/api/projects",
                json={"repo_url": url, "ref": "main", "token": TOKEN, "prompt": "Say first"},
            )
            assert created.status_code == 201, created.text
            body = created.json()
            project_id, message_id = body["project_id"], body["message_id"]
            assert body["commit"] == commit
            events = await answered(stack, project_id, message_id)
            tools = [(e.data["name"], e.data["ok"]) for e in events if e.kind == "tool"]
            # The sandbox held the imported files before the agent's first command.
            assert tools == [("terminal", True), ("createOrUpdateFiles", True)]
            project = (await http.get(f"/api/projects/{project_id}")).json()
            assert [(m["role"], m["type"]) for m in project["messages"]] == [
                ("ASSISTANT", "RESULT"),
                ("USER", "RESULT"),
                ("ASSISTANT", "RESULT"),
            ]
            assert project["messages"][0]["content"] == f"Imported {url} at {commit}"

            clone = tmp_path / "clone"
            await agit("clone", "--quiet", project["git_url"], str(clone))
            log = [e.split("\x1f") for e in (await agit("log", LOG, cwd=clone)).split("\x1e")]
            log = [entry for entry in log if entry[0].strip()]
            assert [entry[0].strip() for entry in log] == [
                "Changed the heading.",
                f"Imported {url} at {commit}",
            ]
            assert log[0][1].startswith("Say first")
            assert (clone / "app/page.tsx").read_text() == page(first)
            assert (clone / "README.md").read_text() == "# The shop\n"

            # A follow-up; `git pull` brings it.
            sent = await http.post(
                f"/api/projects/{project_id}/messages", json={"prompt": "zebra: say second"}
            )
            assert sent.status_code == 202
            await answered(stack, project_id, sent.json()["message_id"])
            await agit("pull", "--quiet", "--ff-only", cwd=clone)
            subjects = (await agit("log", "--format=%s", cwd=clone)).split("\n")
            imported = f"Imported {url} at {commit}"
            assert subjects[:3] == ["Second.", "Changed the heading.", imported]
            assert (clone / "app/page.tsx").read_text() == page(second)
            assert (clone / "README.md").exists()

            # And a push of the same history to a bare repository.
            bare = server.bare("published.git")
            pushed = await http.post(
                f"/api/projects/{project_id}/push",
                json={"remote_url": f"{server.base}/published.git", "token": TOKEN},
            )
            assert pushed.status_code == 200, pushed.text
            head = (await agit("rev-parse", "HEAD", cwd=clone)).strip()
            assert (await agit("rev-parse", "main", cwd=bare)).strip() == head
            remove_repository(stack.harness.settings, uuid.UUID(project_id))
