"""The one way to reach PostgreSQL: an async SQLAlchemy engine over asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from storage.errors import DatabaseUrlError, SchemaMissingError

_UNDEFINED_TABLE = "42P01"

_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
# libpq's sslmode values that asyncpg understands through its `ssl` argument.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def normalize_database_url(url: str) -> str:
    """Turn any PostgreSQL URL into the `postgresql+asyncpg://` form SQLAlchemy needs.

    Keeps `?host=/socket/dir` (unix sockets) and maps libpq's `sslmode=` to
    asyncpg's `ssl=`, which is what hosted providers' URLs usually carry.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in _SCHEMES:
        raise DatabaseUrlError(
            f"DATABASE_URL must start with postgresql:// (got scheme {parts.scheme or 'none'!r})"
        )
    query: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "sslmode":
            if value not in _SSL_MODES:
                raise DatabaseUrlError(f"DATABASE_URL has an unknown sslmode {value!r}")
            key = "ssl"
        query.append((key, value))
    if not parts.hostname and not any(key == "host" for key, _ in query):
        raise DatabaseUrlError("DATABASE_URL names no host (use @host or ?host=/socket/dir)")
    return urlunsplit(
        ("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query, safe="/"), parts.fragment)
    )


def create_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """An engine whose pool checks connections before use (servers restart in dev)."""
    return _create_async_engine(
        normalize_database_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        echo=echo,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions keep loaded attributes after commit, so results outlive the session."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class Database:
    """An engine plus its session factory; `async with db.session() as s:`."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalize_database_url(url)
        self.engine = create_engine(self.url, pool_size=pool_size)
        self._sessions = session_factory(self.engine)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; a database that was never migrated raises `SchemaMissingError`."""
        try:
            async with self._sessions() as session:
                yield session
        except ProgrammingError as error:
            if getattr(error.orig, "sqlstate", None) == _UNDEFINED_TABLE:
                raise SchemaMissingError() from error
            raise

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.dispose()
