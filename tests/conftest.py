"""Shared fixtures. Each is lazy: only tests that ask for it start PostgreSQL or Temporal.

PostgreSQL: with DATABASE_URL set, a throwaway database is created on that server
for the session and dropped at the end; unset, an embedded server runs in a temp
directory. Either way migrations are applied once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

# Heavy imports (SQLAlchemy, Alembic, temporalio) happen inside the fixtures, so
# test sessions that use none of them do not pay for them.
if TYPE_CHECKING:
    from storage.db import Database

SANDBOX_FIXTURES = frozenset({"local_sandboxes", "template_ready", "built"})
"""A test that uses one of these, even through another fixture, needs root and bubblewrap or the
built Next.js template."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `sandbox` what the fast tier (`pytest -m "not sandbox"`, no root, under a minute)
    leaves out: tests that need sandboxes (by their fixtures), and those marked `slow`."""
    for item in items:
        needs_sandboxes = SANDBOX_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if needs_sandboxes or item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.sandbox)


def _plain(url: str) -> str:
    """A URL asyncpg itself accepts (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _private_dir() -> Path:
    """A fresh directory outside pytest's basetemp.

    When running as root, PostgreSQL runs as another user that must traverse the
    path to its data; pytest resets its basetemp to 0700 whenever any session
    starts, so a concurrent pytest run would lock our server out mid-session.
    """
    path = Path(tempfile.mkdtemp(prefix="qai-test-"))
    path.chmod(0o711)
    return path


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data directory an embedded PostgreSQL can use, removed after the test."""
    path = _private_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A migrated, otherwise empty PostgreSQL database for this test session."""
    import asyncpg

    from storage.embedded import EmbeddedPostgres
    from storage.migrate import upgrade

    server_url = os.environ.get("DATABASE_URL")
    if server_url:
        name = f"qai_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(_plain(server_url))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = _with_database(_plain(server_url), name)
        try:
            await upgrade(url)
            yield url
        finally:
            admin = await asyncpg.connect(_plain(server_url))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
    else:
        data_dir = _private_dir()
        postgres = EmbeddedPostgres(data_dir, durable=False)
        try:
            url = await postgres.start()
            await upgrade(url)
            yield url
        finally:
            await postgres.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    from storage.db import Database

    database = Database(database_url, pool_size=10)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def clean_db(db: Database) -> Database:
    """The session database with every table emptied before the test."""
    from sqlalchemy import text

    async with db.session() as session:
        await session.execute(
            text("TRUNCATE projects, messages, fragments, message_images, images CASCADE")
        )
        await session.commit()
    return db


@pytest.fixture(scope="session")
async def temporal_dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """Address (host:port) of a Temporal dev server with QaiProjectId registered."""
    from localstack import TemporalDevServer
    from runtime.processes import free_port

    server = TemporalDevServer(
        state_dir=tmp_path_factory.mktemp("temporal"),
        port=free_port(),
        ui_port=None,
    )
    address = await server.start()
    try:
        yield address
    finally:
        await server.stop()
