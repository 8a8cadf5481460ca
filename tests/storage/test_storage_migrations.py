"""Migrations on a real PostgreSQL: at head, re-runnable, and matching the models."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from storage import publications, sessions  # noqa: F401  (their tables, like the others, must match)
from storage.db import Database
from storage.migrate import current_revision, head_revision, upgrade

ROOT = Path(__file__).resolve().parents[2]


async def test_database_is_at_head(database_url: str) -> None:
    revisions, parents = set(), set()
    for path in (ROOT / "storage/migrations/versions").glob("*.py"):
        text = path.read_text()
        revisions.add(re.search(r'^revision: str = "([^"]+)"', text, re.M).group(1))
        parent = re.search(r'^down_revision: str \| None = "([^"]+)"', text, re.M)
        if parent:
            parents.add(parent.group(1))
    (newest,) = revisions - parents  # one chain, one head
    assert head_revision() == newest
    assert await current_revision(database_url) == head_revision()


async def test_upgrade_is_idempotent_and_concurrency_safe(database_url: str) -> None:
    await asyncio.gather(upgrade(database_url), upgrade(database_url))
    assert await current_revision(database_url) == head_revision()


async def test_migrated_schema_matches_the_models(db: Database) -> None:
    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(
            connection,  # type: ignore[arg-type]
            opts={"compare_type": True, "compare_server_default": True},
        )
        return compare_metadata(context, SQLModel.metadata)

    async with db.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


async def test_enum_types_and_cascades_exist(db: Database) -> None:
    async with db.session() as session:
        labels = (
            await session.execute(
                text(
                    "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                    "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
                )
            )
        ).all()
        cascades = (
            await session.execute(
                text(
                    "SELECT conname FROM pg_constraint WHERE contype = 'f' AND confdeltype = 'c' "
                    "ORDER BY conname"
                )
            )
        ).scalars()
        assert dict(labels) == {
            "message_role": ["USER", "ASSISTANT"],
            "message_type": ["RESULT", "ERROR"],
        }
        assert list(cascades) == [
            "fk_context_plans_run_id_messages",
            "fk_events_project_id_projects",
            "fk_fragments_message_id_messages",
            "fk_messages_project_id_projects",
            "fk_messages_reply_to_id_messages",
            "fk_previews_project_id_projects",
            "fk_project_repositories_project_id_projects",
            "fk_publications_fragment_id_fragments",
            "fk_publications_project_id_projects",
            "fk_run_files_run_id_messages",
            "fk_screenshots_project_id_projects",
            "fk_transcript_entries_run_id_messages",
            "fk_workspace_snapshots_project_id_projects",
            "fk_workspace_snapshots_run_id_messages",
        ]


def _migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storage.migrate"],
        cwd=ROOT,
        env={**os.environ, "QAI_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_migrate_command_applies_to_database_url(database_url: str) -> None:
    result = _migrate({"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert f"qai: database at revision {head_revision()}" in result.stdout


@pytest.mark.slow
def test_migrate_command_failure_is_one_line() -> None:
    result = _migrate({"DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qai: migrations failed: could not apply migrations on ")
    assert "secret" not in lines[0] and "127.0.0.1:1" in lines[0]


@pytest.mark.slow
def test_migrate_command_starts_and_stops_embedded_postgres(embedded_data_dir: Path) -> None:
    result = _migrate({"DATABASE_URL": "", "QAI_DATA_DIR": str(embedded_data_dir)})
    assert result.returncode == 0, result.stderr
    assert f"revision {head_revision()}" in result.stdout
    pid_file = embedded_data_dir / "postgres" / "postmaster.pid"
    assert not pid_file.exists()  # stopped cleanly
