"""A project's versions as git commits, cloned and pulled with the real git client over the
API's smart HTTP, and pushed to a real `git http-backend` on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.archive import app_zip
from repos import history
from repos.history import repositories_dir
from sandboxes.snapshot import WorkspaceSnapshot
from storage import repositories, versions
from storage.db import Database
from storage.repositories import RepositoryRow
from tests.repos.conftest import add_version
from tests.repos.git_server import GitServer, agit, agit_fails

REMOTE_TOKEN = "s3cret-remote-token"
LOG = "--format=%H%x1f%s%x1f%b%x1f%an <%ae>%x1f%cn <%ce>%x1f%ct%x1f%at%x1e"


def tree(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(".git/") or relative == ".git":
            continue
        if path.is_symlink():
            files[relative] = b"-> " + str(path.readlink()).encode()
        elif path.is_file():
            files[relative] = path.read_bytes()
    return files


def commits(log: str) -> list[list[str]]:
    return [entry.strip("\n").split("\x1f") for entry in log.split("\x1e") if entry.strip()]


def first_workspace() -> WorkspaceSnapshot:
    return WorkspaceSnapshot(
        files={
            "app/page.tsx": b"export default function Page() { return <p>one</p> }\n",
            "public/blob.bin": bytes(range(256)),
            "scripts/hello.sh": b"#!/bin/sh\necho hello\n",
            'odd name\'s "file".txt': b"quoted\n",
        },
        modes={"scripts/hello.sh": 0o755},
        symlinks={"docs/page-link": "../app/page.tsx"},
        deleted=["components.json"],
    )


async def test_versions_clone_pull_and_push(
    api,
    server: GitServer,
    db: Database,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project_id = uuid.uuid4()
    workspace = first_workspace()
    first = await add_version(
        db,
        project_id,
        workspace,
        summary="A page that says one.\nIt has a script too.",
        prompt="Build a page that says one",
    )
    async with api(server) as (http, settings):
        project = (await http.get(f"/api/projects/{project_id}")).json()
        git_url = project["git_url"]
        base = str(http.base_url).rstrip("/")
        assert git_url == f"{base}/git/{project_id}.git"

        # Clone: one commit holding the template plus the version, as the zip does.
        clone = tmp_path / "clone"
        await agit("clone", "--quiet", git_url, str(clone))
        [entry] = commits(await agit("log", LOG, cwd=clone))
        _, subject, body, author, committer, committed, authored = entry
        assert subject == "A page that says one."
        assert body.startswith("Build a page that says one\n\nIt has a script too.")
        assert f"Qai-Version: {first.id}" in body
        assert author == committer == "qai <qai@localhost>"
        assert int(committed) == int(authored) == int(first.created_at.timestamp())
        files = tree(clone)
        assert files["app/page.tsx"] == workspace.files["app/page.tsx"]
        assert files["public/blob.bin"] == bytes(range(256))
        assert files["docs/page-link"] == b"-> ../app/page.tsx"
        assert (clone / "scripts/hello.sh").stat().st_mode & 0o111
        assert "components.json" not in files and "package.json" in files
        assert not any(p.startswith(("node_modules/", ".next/")) for p in files)
        with zipfile.ZipFile(io.BytesIO(app_zip(workspace, "app"))) as zipped:
            zipped_files = {
                name.removeprefix("app/"): zipped.read(name) for name in zipped.namelist()
            }
        assert zipped_files == {p: d for p, d in files.items() if p != "docs/page-link"}

        # A new version (a restore: no user message); `git pull` brings it.
        second_workspace = WorkspaceSnapshot(files={"app/page.tsx": b"<p>two</p>\n"})
        second = await add_version(
            db, project_id, second_workspace, summary="Restored version “One”.", prompt=None
        )
        await agit("pull", "--quiet", "--ff-only", cwd=clone)
        log = commits(await agit("log", LOG, cwd=clone))
        assert [c[1] for c in log] == ["Restored version “One”.", "A page that says one."]
        assert log[0][2].strip() == f"Qai-Version: {second.id}"
        assert (clone / "app/page.tsx").read_bytes() == b"<p>two</p>\n"
        assert (clone / "components.json").exists()  # the restore's workspace keeps it
        head = log[0][0]

        # The cache lost: it comes back from its bundle in PostgreSQL, not from the template
        # (which may have changed since).
        cache = repositories_dir(settings) / f"{project_id}.git"
        async with db.session() as session:
            stored = await repositories.get(session, project_id)
        assert stored is not None and [c for _, c in stored.versions] == [log[1][0], log[0][0]]
        shutil.rmtree(cache)
        with monkeypatch.context() as patched:
            patched.setattr(history, "app_entries", lambda *_: pytest.fail("rebuilt"))
            again = tmp_path / "again"  # over git's original protocol (v0) this time
            await agit("-c", "protocol.version=0", "clone", "--quiet", git_url, str(again))
        assert [c[0] for c in commits(await agit("log", LOG, cwd=again))] == [c[0] for c in log]
        # Without the bundle either: rebuilt from the snapshots, the same hashes.
        async with db.session() as session:
            await session.execute(sa.delete(RepositoryRow))
            await session.commit()
        shutil.rmtree(cache)
        rebuilt = tmp_path / "rebuilt"
        await agit("clone", "--quiet", git_url, str(rebuilt))
        assert [c[0] for c in commits(await agit("log", LOG, cwd=rebuilt))] == [c[0] for c in log]

        # Read-only: a push to the API's endpoint is refused in words.
        await agit("commit", "--quiet", "--allow-empty", "-m", "mine", cwd=clone)
        said = await agit_fails("push", "origin", "HEAD:main", cwd=clone)
        assert "read-only" in said and "/push" in said

        # Unknown projects: 404.
        missing = f"{base}/git/{uuid.uuid4()}.git"
        assert "not found" in (await agit_fails("clone", missing, str(tmp_path / "x"))).lower()
        response = await http.get(f"/git/{uuid.uuid4()}.git/info/refs?service=git-upload-pack")
        assert response.status_code == 404
        # git's negotiation may send more than the JSON routes' 64 KB.
        haves = b"".join(b"0032have %040x\n" % index for index in range(3000)) + b"0000"
        negotiation = await http.post(f"/git/{project_id}.git/git-upload-pack", content=haves)
        assert len(haves) > 64 * 1024 and negotiation.status_code == 200
        nonsense = await http.get("/git/nonsense/info/refs?service=git-upload-pack")
        assert nonsense.status_code == 404

        # Push to a bare repository, with the token.
        bare = server.bare("app.git")
        remote = f"{server.base}/app.git"
        body = {"remote_url": remote, "token": REMOTE_TOKEN}
        pushed = await http.post(f"/api/projects/{project_id}/push", json=body)
        assert pushed.status_code == 200, pushed.text
        assert pushed.json()["commit"] == head and pushed.json()["versions"] == 2
        assert (await agit("rev-parse", "main", cwd=bare)).strip() == head

        # Someone else pushes there: ours is now a non-fast-forward, refused; then forced.
        other = tmp_path / "other"
        with_auth = remote.replace("http://", f"http://me:{REMOTE_TOKEN}@")
        await agit("clone", "--quiet", with_auth, str(other))
        await agit("commit", "--quiet", "--allow-empty", "-m", "theirs", cwd=other)
        await agit("push", "--quiet", "origin", "main", cwd=other)
        refused = await http.post(f"/api/projects/{project_id}/push", json=body)
        assert refused.status_code == 409 and "force" in refused.json()["detail"], refused.text
        assert (await agit("rev-parse", "main", cwd=bare)).strip() != head
        forced = await http.post(f"/api/projects/{project_id}/push", json={**body, "force": True})
        assert forced.status_code == 200, forced.text
        assert (await agit("rev-parse", "main", cwd=bare)).strip() == head
        branch = await http.post(
            f"/api/projects/{project_id}/push", json={**body, "branch": "qai/export"}
        )
        assert branch.status_code == 200
        assert (await agit("rev-parse", "qai/export", cwd=bare)).strip() == head

        # A wrong token is refused, and appears nowhere.
        wrong = "wrong-token-7f3a9c"
        denied = await http.post(f"/api/projects/{project_id}/push", json={**body, "token": wrong})
        assert denied.status_code == 403, denied.text
        assert "authentication failed" in denied.json()["detail"]
        missing_repo = await http.post(
            f"/api/projects/{project_id}/push",
            json={**body, "remote_url": f"{server.base}/nothing-here.git"},
        )
        assert missing_repo.status_code == 404, missing_repo.text
        assert "not found" in missing_repo.json()["detail"]
        unreachable_port = settings.qai_git_allowed_hosts.split(",")[-1].rsplit(":", 1)[1]
        unreachable = await http.post(
            f"/api/projects/{project_id}/push",
            json={**body, "remote_url": f"http://127.0.0.1:{unreachable_port}/app.git"},
        )
        assert unreachable.status_code == 502 and "unreachable" in unreachable.json()["detail"]

        # Remotes that are not allowed: refused before git runs.
        port = server.port
        for url, words in [
            (f"https://localhost:{port}/app.git", "loopback"),
            (f"https://127.0.0.2:{port}/app.git", "loopback"),
            ("https://10.1.2.3/app.git", "private"),
            ("https://169.254.169.254/app.git", "link-local"),
            (f"http://localhost:{port}/app.git", "plain http"),
            ("https://user:pw@github.com/a/b.git", "credentials"),
            ("ssh://github.com/a/b.git", "https://"),
            ("file:///etc", "https://"),
        ]:
            response = await http.post(
                f"/api/projects/{project_id}/push", json={**body, "remote_url": url}
            )
            assert response.status_code == 422, (url, response.text)
            assert words in response.json()["detail"], (url, response.text)
        bad_branch = await http.post(
            f"/api/projects/{project_id}/push", json={**body, "branch": "-x"}
        )
        assert bad_branch.status_code == 422 and "branch" in bad_branch.json()["detail"]
        unknown = await http.post(f"/api/projects/{uuid.uuid4()}/push", json=body)
        assert unknown.status_code == 404

        # A deleted project's repository is served no more, and its cache goes.
        cache = repositories_dir(settings) / f"{project_id}.git"
        kept_files = [path for path in cache.rglob("*") if path.is_file()]
        kept_files = [path for path in kept_files if not path.is_relative_to(cache / "objects")]
        kept_files = {path: path.read_bytes() for path in kept_files}
        assert cache.exists()
        async with db.session() as session:
            assert await versions.delete_project(session, project_id)
        gone = await http.post(f"/git/{project_id}.git/git-upload-pack", content=b"0000")
        assert gone.status_code == 404 and not cache.exists()

    for secret in (REMOTE_TOKEN, wrong):
        assert secret not in caplog.text
        assert secret not in denied.text + refused.text + forced.text
        for path, data in kept_files.items():
            assert secret.encode() not in data, path


async def test_clone_needs_the_api_token(api, db: Database, tmp_path: Path) -> None:
    project_id = uuid.uuid4()
    await add_version(db, project_id, first_workspace(), summary="One.", prompt="one")
    async with api(None, qai_api_token="api-token-123") as (http, _settings):
        url = f"{str(http.base_url).rstrip('/')}/git/{project_id}.git"
        said = await agit_fails("clone", url, str(tmp_path / "no"))
        assert "Authentication failed" in said or "could not read Username" in said
        with_token = url.replace("http://", "http://anyone:api-token-123@")
        await agit("clone", "--quiet", with_token, str(tmp_path / "yes"))
        assert (tmp_path / "yes/app/page.tsx").exists()
        bad = url.replace("http://", "http://anyone:nope@")
        assert "Authentication failed" in await agit_fails("clone", bad, str(tmp_path / "bad"))
        # The JSON API is unchanged: Bearer only.
        assert (await http.get(f"/api/projects/{project_id}")).status_code == 401
        ok = await http.get(
            f"/api/projects/{project_id}", headers={"Authorization": "Bearer api-token-123"}
        )
        assert ok.status_code == 200


def test_git_is_installed() -> None:
    assert subprocess.run(["git", "--version"], capture_output=True, check=True).returncode == 0


@pytest.mark.slow
async def test_cli_push_reads_the_token_from_the_environment(
    server: GitServer, db: Database, database_url: str, tmp_path: Path
) -> None:
    project_id = uuid.uuid4()
    await add_version(db, project_id, first_workspace(), summary="One.", prompt="one")
    bare = server.bare("cli.git")
    root = Path(__file__).resolve().parents[2]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QAI_", "OPENAI_"))},
        "DATABASE_URL": database_url,
        "QAI_DATA_DIR": str(tmp_path / "data"),
        "QAI_GIT_ALLOWED_HOSTS": f"127.0.0.1:{server.port}",
        "QAI_GIT_TOKEN": REMOTE_TOKEN,
    }

    def starter(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "starter.py", *args],
            cwd=root,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    remote = f"{server.base}/cli.git"
    done = await asyncio.to_thread(starter, "push", str(project_id), remote, "--branch", "qai")
    assert done.returncode == 0, done.stderr
    assert "Pushed" in done.stdout
    head = (await agit("rev-parse", "qai", cwd=bare)).strip()
    assert head in (await agit("ls-remote", remote.replace("://", f"://x:{REMOTE_TOKEN}@")))
    denied = await asyncio.to_thread(
        starter, "push", str(project_id), remote, QAI_GIT_TOKEN="nope-wrong"
    )
    assert denied.returncode == 2 and "authentication failed" in denied.stderr
    assert "nope-wrong" not in denied.stderr + denied.stdout
