"""Screenshots: each version's picture, and the fragment's link to it.

Revision ID: issue18_screenshots
Revises: issue22_sessions
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "issue18_screenshots"
down_revision: str | None = "issue22_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "screenshots",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("media_type", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_screenshots"),
        sa.UniqueConstraint("key", name="uq_screenshots_key"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_screenshots_project_id_projects",
            ondelete="CASCADE",
        ),
    )
    op.add_column("fragments", sa.Column("screenshot_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "fk_fragments_screenshot_id_screenshots",
        "fragments",
        "screenshots",
        ["screenshot_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint("fk_fragments_screenshot_id_screenshots", "fragments", type_="foreignkey")
    op.drop_column("fragments", "screenshot_id")
    op.drop_table("screenshots")
