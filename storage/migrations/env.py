"""Alembic environment. `storage.migrate` hands us an open connection; nothing reads alembic.ini."""

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from storage import (  # noqa: F401  (they register their tables on the metadata)
    events,
    images,
    models,
    previews,
    publications,
    repositories,
    sessions,
    snapshots,
    transcript,
)

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `python -m storage.migrate`, not the alembic CLI")
_run(connection)
