"""The embedded PostgreSQL: exclusive per data dir, robust to leftovers, clear on failure."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from sqlalchemy import text

from storage.db import Database
from storage.embedded import EmbeddedPostgres
from storage.errors import EmbeddedPostgresError


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie awaiting reaping counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in {"Z", "X"}


async def _select_one(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT 1"))
    finally:
        await connection.close()


async def test_start_use_stop_and_restart(embedded_data_dir: Path) -> None:
    data_dir = embedded_data_dir / "my data"  # a space must survive the URL
    postgres = EmbeddedPostgres(data_dir, durable=False)
    url = await postgres.start()
    pid = postgres.pid
    assert pid is not None
    assert url == f"postgresql://postgres@/qai?host={quote(str(data_dir / 'postgres'))}"
    assert await _select_one(url) == 1
    async with Database(url) as db, db.session() as session:
        assert await session.scalar(text("SELECT current_database()")) == "qai"

    with pytest.raises(
        EmbeddedPostgresError, match=rf"in use by another qai process \(pid {os.getpid()}\)"
    ):
        await EmbeddedPostgres(data_dir).start()

    await postgres.stop()
    await postgres.stop()  # idempotent
    assert not _alive(pid)
    assert not (data_dir / "postgres" / "postmaster.pid").exists()

    async with EmbeddedPostgres(data_dir, durable=False) as again:  # reuses the cluster
        assert await _select_one(again.url) == 1


async def test_leftover_server_and_stale_pid_file_are_handled(embedded_data_dir: Path) -> None:
    first = EmbeddedPostgres(embedded_data_dir, durable=False)
    await first.start()
    leftover = first.pid
    assert leftover is not None
    # Simulate a crashed owner: the lock goes away but the server keeps running.
    first._lock.release()
    first._process = None

    async with EmbeddedPostgres(embedded_data_dir, durable=False) as second:
        assert not _alive(leftover)
        assert second.pid != leftover
        assert await _select_one(second.url) == 1

    # A postmaster.pid naming a live process that is not PostgreSQL (pid reuse).
    (embedded_data_dir / "postgres" / "postmaster.pid").write_text(f"{os.getpid()}\n")
    async with EmbeddedPostgres(embedded_data_dir, durable=False) as third:
        assert await _select_one(third.url) == 1


async def test_a_server_that_cannot_start_gives_its_log(embedded_data_dir: Path) -> None:
    async with EmbeddedPostgres(embedded_data_dir, durable=False):
        pass
    config = embedded_data_dir / "postgres" / "postgresql.conf"
    config.write_text(config.read_text() + "\nthis is not a setting\n")
    postgres = EmbeddedPostgres(embedded_data_dir, durable=False, start_timeout=30)
    with pytest.raises(EmbeddedPostgresError, match="exited with code 1 while starting") as caught:
        await postgres.start()
    assert "syntax error" in str(caught.value)
    # The failed start released its lock: a corrected configuration starts fine.
    config.write_text(config.read_text().replace("this is not a setting", ""))
    async with EmbeddedPostgres(embedded_data_dir, durable=False) as fixed:
        assert await _select_one(fixed.url) == 1
