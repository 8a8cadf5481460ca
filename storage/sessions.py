"""Browser sessions: a login makes one, it expires on its own, and logging out deletes it.

Only a hash of the session id is stored, so a copy of the table cannot be replayed as cookies.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel


class BrowserSession(SQLModel, table=True):
    __tablename__ = "browser_sessions"

    id_hash: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    created_at: datetime = Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")
        )
    )
    expires_at: datetime = Field(
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False, index=True)
    )


_TABLE = BrowserSession.__table__  # type: ignore[attr-defined]


async def create(session: AsyncSession, id_hash: str, seconds: float) -> None:
    """A session valid for `seconds`; expired ones are dropped on the way."""
    await session.execute(sa.delete(_TABLE).where(_TABLE.c.expires_at <= sa.func.now()))
    expires = sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    await session.execute(sa.insert(_TABLE).values(id_hash=id_hash, expires_at=expires))
    await session.commit()


async def is_valid(session: AsyncSession, id_hash: str) -> bool:
    found = await session.execute(
        sa.select(_TABLE.c.id_hash).where(
            _TABLE.c.id_hash == id_hash, _TABLE.c.expires_at > sa.func.now()
        )
    )
    return found.first() is not None


async def revoke(session: AsyncSession, id_hash: str) -> None:
    await session.execute(sa.delete(_TABLE).where(_TABLE.c.id_hash == id_hash))
    await session.commit()
