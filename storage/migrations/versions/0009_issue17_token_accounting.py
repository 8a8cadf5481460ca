"""Token accounting and context plans: cached tokens, model calls and finish reasons, and what
each model call sent (which transcript entries it left out).

Revision ID: issue17_token_accounting
Revises: issue21_git_bundles
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "issue17_token_accounting"
down_revision: str | None = "issue21_git_bundles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("transcript_entries", sa.Column("cached_tokens", sa.Integer(), nullable=True))
    op.add_column("transcript_entries", sa.Column("finish_reason", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("cached_tokens", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("model_calls", sa.Integer(), nullable=True))
    op.create_table(
        "context_plans",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("plan", JSONB(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("run_id", "iteration", name="pk_context_plans"),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["messages.id"],
            name="fk_context_plans_run_id_messages",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("context_plans")
    op.drop_column("messages", "model_calls")
    op.drop_column("messages", "cached_tokens")
    op.drop_column("transcript_entries", "finish_reason")
    op.drop_column("transcript_entries", "cached_tokens")
