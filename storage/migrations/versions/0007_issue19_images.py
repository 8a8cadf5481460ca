"""Images in prompts: images stored once by content, and each message's references to them.

Revision ID: issue19_images
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "issue19_images"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
    )
    op.create_table(
        "message_images",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("image_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("upload_name", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "position", name="pk_message_images"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_message_images_image_id_images"
        ),
    )
    op.create_index("ix_message_images_project_id", "message_images", ["project_id"])
    op.create_index("ix_message_images_image_id", "message_images", ["image_id"])
    op.create_index(
        "uq_message_images_upload_name",
        "message_images",
        ["project_id", "upload_name"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("message_images")
    op.drop_table("images")
