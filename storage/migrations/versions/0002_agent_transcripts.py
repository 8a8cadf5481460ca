"""Agent working memory: transcript entries and files written, per run (user message).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transcript_entries",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("tool_call_id", sa.Text(), nullable=True),
        sa.Column("message", postgresql.JSONB(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_transcript_entries"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["messages.id"],
            name="fk_transcript_entries_run_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "uq_transcript_tool_call",
        "transcript_entries",
        ["run_id", "tool_call_id"],
        unique=True,
        postgresql_where=sa.text("tool_call_id IS NOT NULL"),
    )
    op.create_index(
        "uq_transcript_turn",
        "transcript_entries",
        ["run_id", "iteration", "role"],
        unique=True,
        postgresql_where=sa.text("role IN ('assistant', 'title', 'user')"),
    )
    op.create_table(
        "run_files",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_run_files"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["messages.id"], name="fk_run_files_run_id_messages", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("run_files")
    op.drop_index("uq_transcript_turn", table_name="transcript_entries")
    op.drop_index("uq_transcript_tool_call", table_name="transcript_entries")
    op.drop_table("transcript_entries")
