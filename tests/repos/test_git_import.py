"""Starting a project from a repository served by `git http-backend` on loopback: what is
imported, and every repository that is refused (with nothing left behind)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from repos import importing
from sandboxes.manifest import template_source
from sandboxes.snapshot import WorkspaceSnapshot
from storage import snapshots
from storage.db import Database
from storage.models import Project
from submission import import_project
from tests.repos.git_server import GitServer, agit, publish
from tests.workflows.conftest import settings_for

TOKEN = "s3cret-remote-token"
NEXT_PACKAGE = json.dumps({"name": "mine", "dependencies": {"next": "15.0.0"}}).encode()


async def project_count(db: Database) -> int:
    async with db.session() as session:
        return await session.scalar(sa.select(sa.func.count()).select_from(Project)) or 0


async def test_import_a_repository_and_refuse_bad_ones(
    api, server: GitServer, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    template_package = (template_source() / "package.json").read_bytes()
    files = {
        "package.json": template_package,
        "app/page.tsx": b"export default function Page() { return <p>imported</p> }\n",
        "lib/inside": b"-> ../app/page.tsx",
        "node_modules/junk/index.js": b"ignored\n",
        "README.md": b"# mine\n",
    }
    commit = await publish(server, "good", files, tmp_path)
    async with api(server) as (http, _settings):
        url = f"{server.base}/good.git"
        created = await http.post(
            "/api/projects", json={"repo_url": url, "ref": "main", "token": TOKEN}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["commit"] == commit and body["files"] == 4
        project_id = body["project_id"]
        project = (await http.get(f"/api/projects/{project_id}")).json()
        [message] = project["messages"]
        assert (message["role"], message["type"]) == ("ASSISTANT", "RESULT")
        assert message["content"] == f"Imported {url} at {commit}"
        assert project["name"] == "good"
        async with db.session() as session:
            workspace = await snapshots.latest(session, uuid.UUID(project_id))
        assert isinstance(workspace, WorkspaceSnapshot)
        assert "package.json" not in workspace.files  # the template's own: nothing to install
        assert workspace.symlinks == {"lib/inside": "../app/page.tsx"}
        assert "components.json" in workspace.deleted
        assert not any(path.startswith("node_modules") for path in workspace.files)

        # Its history: one commit holding exactly the repository's files.
        clone = tmp_path / "clone"
        await agit("clone", "--quiet", project["git_url"], str(clone))
        subject = (await agit("log", "--format=%s", cwd=clone)).strip()
        assert subject == f"Imported {url} at {commit}"
        listed = (await agit("ls-files", cwd=clone)).split()
        assert sorted(listed) == sorted(p for p in files if not p.startswith("node_modules"))

        # Refused repositories: a clear 4xx, and no project written.
        before = await project_count(db)
        react = b'{"dependencies": {"react": "19"}}'
        await publish(server, "plain", {"package.json": react}, tmp_path)
        await publish(server, "nopkg", {"index.html": b"<p>hi</p>"}, tmp_path)
        await publish(
            server,
            "escape",
            {"package.json": NEXT_PACKAGE, "secrets": b"-> ../../../etc/passwd"},
            tmp_path,
        )
        await publish(server, "absolute", {"package.json": NEXT_PACKAGE, "x": b"-> /etc"}, tmp_path)
        await publish(
            server,
            "submodule",
            {"package.json": NEXT_PACKAGE},
            tmp_path,
            submodules={"vendor/lib": commit},
        )
        many = {f"files/{index}.txt": b"x" for index in range(importing.MAX_FILES)}
        await publish(server, "many", {"package.json": NEXT_PACKAGE, **many}, tmp_path)
        big = {"package.json": NEXT_PACKAGE, "big.bin": b"b" * 4096}
        await publish(server, "big", big, tmp_path)
        cases = [
            ({"repo_url": f"{server.base}/plain.git"}, 422, "not a Next.js app"),
            ({"repo_url": f"{server.base}/nopkg.git"}, 422, "not a Next.js app"),
            ({"repo_url": f"{server.base}/escape.git"}, 422, "points outside"),
            ({"repo_url": f"{server.base}/absolute.git"}, 422, "points outside"),
            ({"repo_url": f"{server.base}/submodule.git"}, 422, "submodule"),
            ({"repo_url": f"{server.base}/many.git"}, 422, "too large"),
            ({"repo_url": f"{server.base}/missing.git"}, 404, "not found"),
            ({"repo_url": url, "ref": "no-such-branch"}, 404, "not found"),
            ({"repo_url": url, "ref": "--upload-pack=touch /tmp/x"}, 422, "not a branch"),
            ({"repo_url": url, "token": "wrong"}, 403, "authentication failed"),
            ({"repo_url": f"https://localhost:{server.port}/good.git"}, 422, "loopback"),
            ({"repo_url": url, "prompt": "   "}, 422, "prompt is empty"),
        ]
        for case, status, words in cases:
            payload = {"token": TOKEN, **case}
            response = await http.post("/api/projects", json=payload)
            assert response.status_code == status, (case, response.text)
            assert words in response.json()["detail"], (case, response.text)
        monkeypatch.setattr(importing, "MAX_BYTES", 4000)
        too_big = await http.post(
            "/api/projects", json={"repo_url": f"{server.base}/big.git", "token": TOKEN}
        )
        assert too_big.status_code == 422 and "too large" in too_big.json()["detail"]
        assert await project_count(db) == before


class RefusingTemporal:
    """A Temporal client whose server refuses every workflow start."""

    async def start_workflow(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Temporal is down")


async def test_an_import_temporal_refuses_leaves_no_project(
    server: GitServer, db: Database, tmp_path: Path
) -> None:
    await publish(server, "lonely", {"package.json": NEXT_PACKAGE}, tmp_path)
    settings = settings_for("http://unused/v1", qai_git_allowed_hosts=f"127.0.0.1:{server.port}")
    before = await project_count(db)
    with pytest.raises(RuntimeError, match="Temporal is down"):
        await import_project(
            RefusingTemporal(),  # type: ignore[arg-type]
            db,
            settings,
            f"{server.base}/lonely.git",
            token=TOKEN,
        )
    assert await project_count(db) == before
