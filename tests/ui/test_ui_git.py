"""The Git dialog (clone address, push) and "Start from a repository", in Chromium, against the
API with PostgreSQL and a loopback `git http-backend` (no worker, no sandbox: versions are
written to PostgreSQL directly)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from playwright.async_api import expect

from storage.db import Database
from tests.repos.conftest import add_version, api, server  # noqa: F401  (fixtures)
from tests.repos.git_server import GitServer, agit, publish
from tests.repos.test_git_history import REMOTE_TOKEN, first_workspace

pytestmark = pytest.mark.slow


async def test_push_dialog_and_start_from_a_repository(
    api,  # noqa: F811
    server: GitServer,  # noqa: F811
    db: Database,
    new_page,
    tmp_path: Path,
) -> None:
    project_id = uuid.uuid4()
    await add_version(db, project_id, first_workspace(), summary="One.", prompt="one")
    bare = server.bare("ui.git")
    package = json.dumps({"dependencies": {"next": "15.0.0"}}).encode()
    commit = await publish(server, "from-ui", {"package.json": package}, tmp_path)
    async with api(server) as (http, _settings):
        page = await new_page(str(http.base_url), width=400, height=800)
        await page.goto(f"/projects/{project_id}")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways ({width}px)"

        await page.get_by_role("button", name="Git").click()
        dialog = page.get_by_role("dialog", name="Git")
        await expect(dialog).to_be_visible()
        await expect(dialog.locator("#git-url")).to_have_text(
            f"git clone {str(http.base_url).rstrip('/')}/git/{project_id}.git"
        )
        await dialog.get_by_label("Remote (https)").fill(f"{server.base}/ui.git")
        await dialog.get_by_label("Access token").fill("not-the-token")
        await dialog.get_by_role("button", name="Push").click()
        await expect(dialog.get_by_role("alert")).to_contain_text("authentication failed")
        await dialog.get_by_label("Access token").fill(REMOTE_TOKEN)
        await dialog.get_by_role("button", name="Push").click()
        await expect(dialog.get_by_role("status")).to_contain_text("pushed 1 version(s) to main")
        await expect(dialog.get_by_role("alert")).to_be_hidden()
        await expect(dialog.get_by_label("Access token")).to_have_value("")
        head = (await agit("rev-parse", "main", cwd=bare)).strip()
        assert len(head) == 40
        await dialog.get_by_role("button", name="Close").click()
        await expect(dialog).to_be_hidden()

        home = await new_page(str(http.base_url))
        await home.goto("/")
        await home.get_by_text("Start from a repository").click()
        await home.get_by_label("Repository (a Next.js app, https)").fill(
            f"{server.base}/from-ui.git"
        )
        await home.get_by_label("Access token (private repositories)").fill(REMOTE_TOKEN)
        await home.get_by_role("button", name="Import").click()
        await home.wait_for_url(re.compile(r"/projects/"))
        await expect(home.get_by_text(f"at {commit}")).to_be_visible()
