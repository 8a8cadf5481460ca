"""The previews table: one row per project, written idempotently, hibernated only for the
sandbox it names, and never written for a project that is gone."""

from __future__ import annotations

import uuid

from storage import previews, queries
from storage.db import Database


async def _record(db: Database, project_id: uuid.UUID, sandbox_id: str) -> None:
    async with db.session() as session:
        await previews.record_live(
            session,
            project_id=project_id,
            sandbox_id=sandbox_id,
            host_id="host-a",
            host_address="127.0.0.1:8080",
            target="http://127.0.0.1:3000",
        )
        await session.commit()


async def test_a_project_has_one_row_that_follows_its_sandbox(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, _ = await queries.create_project(session, "p", "a page")
    await _record(clean_db, project.id, "sbx-1")
    await _record(clean_db, project.id, "sbx-1")  # a retried activity
    await _record(clean_db, project.id, "sbx-2")  # replaced
    async with clean_db.session() as session:
        row = await previews.get(session, project.id)
        assert row is not None and (row.sandbox_id, row.state) == ("sbx-2", "live")
        # The old sandbox's hibernation does not touch the row of the new one.
        assert not await previews.mark_hibernated(session, project.id, "sbx-1")
        assert await previews.mark_hibernated(session, project.id, "sbx-2")
        await session.commit()
        row = await previews.get(session, project.id)
        assert row is not None and row.state == "hibernated"
        quiet = await previews.quiet_seconds(session, project.id)
        assert quiet is not None and 0 <= quiet < 60
        assert await previews.count_by_state(session, "host-a") == {"hibernated": 1}


async def test_a_project_that_is_gone_gets_no_row(clean_db: Database) -> None:
    missing = uuid.uuid4()
    await _record(clean_db, missing, "sbx-1")
    async with clean_db.session() as session:
        assert await previews.get(session, missing) is None
        assert await previews.quiet_seconds(session, missing) is None
