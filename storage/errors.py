"""Errors storage raises, each naming what was missing or wrong."""

from __future__ import annotations

import uuid


class StorageError(Exception):
    """Base class for storage errors callers may want to catch together."""


class DatabaseUrlError(StorageError, ValueError):
    """DATABASE_URL cannot be used."""


class SchemaMissingError(StorageError):
    """The database has none of qai's tables: it was never migrated."""

    def __init__(self) -> None:
        super().__init__(
            "the database has no qai tables yet; run `python -m storage.migrate` "
            "(`python worker.py --dev` does it for you)"
        )


class ProjectNotFoundError(StorageError, LookupError):
    def __init__(self, project_id: uuid.UUID) -> None:
        super().__init__(f"project {project_id} does not exist")
        self.project_id = project_id


class MessageNotFoundError(StorageError, LookupError):
    def __init__(self, message_id: uuid.UUID, detail: str = "does not exist") -> None:
        super().__init__(f"message {message_id} {detail}")
        self.message_id = message_id


class EmbeddedPostgresError(StorageError, RuntimeError):
    """The embedded PostgreSQL could not be started or stopped."""


class MigrationError(StorageError, RuntimeError):
    """Migrations could not be applied."""
