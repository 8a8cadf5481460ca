"""The long-lived clients activities share, built once per worker process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from openai import AsyncOpenAI

from agent.llm import make_openai_client
from runtime.settings import Settings
from sandboxes.base import SandboxBackend
from sandboxes.factory import sandbox_backend
from storage.blobs import BlobStore, open_blobs
from storage.db import Database


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    sandboxes: SandboxBackend
    llm: AsyncOpenAI
    blobs: BlobStore | None = None
    """Build outputs (publications); None: opened from the settings where needed."""


@asynccontextmanager
async def open_services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    db = Database(database_url)
    llm = make_openai_client(settings)
    sandboxes = sandbox_backend(settings)
    try:
        await sandboxes.start()
        yield Services(
            settings=settings, db=db, sandboxes=sandboxes, llm=llm, blobs=open_blobs(settings)
        )
    finally:
        await sandboxes.close()
        await llm.close()
        await db.dispose()
