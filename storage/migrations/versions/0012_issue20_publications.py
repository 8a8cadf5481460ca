"""Publications: each production build of a project's version, and which one is served.

Revision ID: issue20_publications
Revises: issue18_screenshots
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "issue20_publications"
down_revision: str | None = "issue18_screenshots"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "publications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("fragment_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("files", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("build_seconds", sa.Float(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_publications"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_publications_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["fragment_id"],
            ["fragments.id"],
            name="fk_publications_fragment_id_fragments",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('building', 'live', 'failed', 'superseded')",
            name="ck_publications_status",
        ),
    )
    op.create_index(
        "ix_publications_project_id_created_at", "publications", ["project_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_publications_project_id_created_at", table_name="publications")
    op.drop_table("publications")
