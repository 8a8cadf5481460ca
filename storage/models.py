"""Tables of the original schema (Project, Message, Fragment) plus qai's own columns.

(No `from __future__ import annotations`: SQLModel resolves relationship
annotations at class creation, so Fragment is defined before Message.)

Timestamps are set by PostgreSQL (`clock_timestamp()`), always timezone-aware.
Messages carry a bigint identity `seq` so rows inserted in one transaction keep
their insertion order when `created_at` ties.
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, Relationship, SQLModel

# Deterministic constraint names, so later migrations can refer to them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# INSERT/UPDATE ... RETURNING the server-set columns (timestamps, seq), so rows
# are complete after a flush without lazy loads (which async sessions forbid).
_MAPPER_ARGS: dict[str, Any] = {"eager_defaults": True}


class MessageRole(StrEnum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"


class MessageType(StrEnum):
    RESULT = "RESULT"
    ERROR = "ERROR"


def _enum(enum: type[StrEnum], name: str) -> sa.Enum:
    return sa.Enum(enum, name=name, values_callable=lambda members: [m.value for m in members])


def _id() -> Any:
    return Field(
        default_factory=uuid.uuid4,
        primary_key=True,
        sa_column_kwargs={"server_default": sa.text("gen_random_uuid()")},
    )


def _created_at() -> Any:
    return Field(
        default=None,
        sa_column_kwargs={"server_default": sa.func.clock_timestamp(), "nullable": False},
        sa_type=sa.DateTime(timezone=True),
    )


def _updated_at() -> Any:
    return Field(
        default=None,
        sa_column_kwargs={
            "server_default": sa.func.clock_timestamp(),
            "onupdate": sa.func.clock_timestamp(),
            "nullable": False,
        },
        sa_type=sa.DateTime(timezone=True),
    )


class Project(SQLModel, table=True):
    __tablename__ = "projects"
    __mapper_args__ = _MAPPER_ARGS

    id: uuid.UUID = _id()
    name: str = Field(sa_type=sa.Text)
    conversation_summary: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _created_at()
    updated_at: datetime = _updated_at()


class Screenshot(SQLModel, table=True):
    """A version's picture: `/` at desktop size, compressed (at most 300 KB)."""

    __tablename__ = "screenshots"
    __mapper_args__ = _MAPPER_ARGS

    id: uuid.UUID = _id()
    key: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    """Who took it (a run's id, a restore's message id): a retried activity stores it once."""
    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        )
    )
    media_type: str = Field(sa_type=sa.Text)
    data: bytes = Field(sa_type=sa.LargeBinary)
    width: int
    height: int
    created_at: datetime = _created_at()


class Fragment(SQLModel, table=True):
    __tablename__ = "fragments"
    __mapper_args__ = _MAPPER_ARGS

    id: uuid.UUID = _id()
    message_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        )
    )
    sandbox_url: str = Field(sa_type=sa.Text)
    title: str = Field(sa_type=sa.Text)
    files: dict[str, str] = Field(default_factory=dict, sa_type=JSONB)
    summary: str | None = Field(default=None, sa_type=sa.Text)
    checks: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    """What the run's checks found (`agent.checks.ChecksReport`); None before checks existed."""
    screenshot_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("screenshots.id", ondelete="SET NULL"), nullable=True
        ),
    )
    created_at: datetime = _created_at()
    updated_at: datetime = _updated_at()


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __mapper_args__ = _MAPPER_ARGS
    __table_args__ = (sa.Index("ix_messages_project_order", "project_id", "created_at", "seq"),)

    id: uuid.UUID = _id()
    seq: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
    )
    project_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        )
    )
    role: MessageRole = Field(sa_type=_enum(MessageRole, "message_role"))
    type: MessageType = Field(sa_type=_enum(MessageType, "message_type"))
    content: str = Field(sa_type=sa.Text)
    # The Temporal workflow that produced (or is producing) this message.
    workflow_id: str | None = Field(default=None, sa_type=sa.Text)
    # For an assistant message: the user message it answers. Unique, so each
    # user message gets at most one reply however often a workflow retries.
    reply_to_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Uuid,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=True,
            unique=True,
        ),
    )
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    model_calls: int | None = None
    iterations: int | None = None
    created_at: datetime = _created_at()
    updated_at: datetime = _updated_at()

    fragment: Fragment | None = Relationship(
        sa_relationship_kwargs={"uselist": False, "lazy": "raise", "passive_deletes": True}
    )


class FragmentData(BaseModel):
    """What a finished run hands to storage to become a Fragment row."""

    model_config = ConfigDict(frozen=True)

    sandbox_url: str
    title: str
    files: dict[str, str]
    summary: str | None = None
    checks: dict[str, Any] | None = None
    screenshot_id: uuid.UUID | None = None
