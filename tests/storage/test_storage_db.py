"""DATABASE_URL handling, without a server."""

from __future__ import annotations

import pytest

from runtime.settings import Settings
from storage.db import normalize_database_url
from storage.embedded import database_url_for
from storage.errors import DatabaseUrlError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/qai", "postgresql+asyncpg://u:p@db:5432/qai"),
        ("postgres://u@db/qai", "postgresql+asyncpg://u@db/qai"),
        ("postgresql+asyncpg://u@db/qai", "postgresql+asyncpg://u@db/qai"),
        (
            "postgresql://postgres@/qai?host=/run/pg",
            "postgresql+asyncpg://postgres@/qai?host=/run/pg",
        ),
        ("postgresql://u@db/qai?sslmode=require", "postgresql+asyncpg://u@db/qai?ssl=require"),
    ],
)
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://u@db/qai", "must start with postgresql://"),
        ("postgresql:///qai", "names no host"),
        ("postgresql://u@db/qai?sslmode=sometimes", "unknown sslmode"),
    ],
)
def test_normalize_database_url_rejects(given: str, message: str) -> None:
    with pytest.raises(DatabaseUrlError, match=message):
        normalize_database_url(given)


async def test_database_url_for_uses_the_setting_and_starts_nothing(tmp_path: object) -> None:
    settings = Settings(database_url="postgresql://u@db/qai", qai_data_dir=tmp_path)
    async with database_url_for(settings) as url:
        assert url == "postgresql://u@db/qai"
    assert list(settings.data_dir.iterdir()) == []
