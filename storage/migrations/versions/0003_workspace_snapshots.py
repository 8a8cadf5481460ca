"""Workspace snapshots: what each run's project changed relative to the template.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_snapshots",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("tool_call_id", sa.Text(), nullable=True),
        sa.Column("archive", sa.LargeBinary(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_workspace_snapshots"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["messages.id"],
            name="fk_workspace_snapshots_run_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_workspace_snapshots_project_id_projects",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_workspace_snapshots_project_id", "workspace_snapshots", ["project_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_workspace_snapshots_project_id", table_name="workspace_snapshots")
    op.drop_table("workspace_snapshots")
