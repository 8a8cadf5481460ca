"""Initial schema: projects, messages, fragments (the original schema plus qai's columns).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

message_role = postgresql.ENUM("USER", "ASSISTANT", name="message_role", create_type=False)
message_type = postgresql.ENUM("RESULT", "ERROR", name="message_type", create_type=False)


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
    ]


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def upgrade() -> None:
    message_role.create(op.get_bind(), checkfirst=False)
    message_type.create(op.get_bind(), checkfirst=False)

    op.create_table(
        "projects",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("conversation_summary", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )

    op.create_table(
        "messages",
        _id(),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("role", message_role, nullable=False),
        sa.Column("type", message_type, nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=True),
        sa.Column("reply_to_id", sa.Uuid(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("seq", name="uq_messages_seq"),
        sa.UniqueConstraint("reply_to_id", name="uq_messages_reply_to_id"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_messages_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reply_to_id"],
            ["messages.id"],
            name="fk_messages_reply_to_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_messages_project_order", "messages", ["project_id", "created_at", "seq"])

    op.create_table(
        "fragments",
        _id(),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("sandbox_url", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("files", postgresql.JSONB(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_fragments"),
        sa.UniqueConstraint("message_id", name="uq_fragments_message_id"),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_fragments_message_id_messages",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("fragments")
    op.drop_index("ix_messages_project_order", table_name="messages")
    op.drop_table("messages")
    op.drop_table("projects")
    message_type.drop(op.get_bind(), checkfirst=False)
    message_role.drop(op.get_bind(), checkfirst=False)
