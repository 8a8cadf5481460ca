"""Load what the agent needs to know about a project's conversation so far."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import ProjectNotFoundError
from storage.models import Fragment, Message, MessageRole
from storage.queries import get_messages, get_project


@dataclass(frozen=True)
class ConversationContext:
    project_summary: str | None
    messages: list[Message]  # oldest first, fragments loaded
    latest_fragment: Fragment | None  # of the newest message that has one
    latest_user_message: Message | None


async def load_project_conversation_context(
    session: AsyncSession, project_id: uuid.UUID
) -> ConversationContext:
    """The seed's loadProjectConversationContext; an unknown project raises ProjectNotFoundError."""
    project = await get_project(session, project_id)
    if project is None:
        raise ProjectNotFoundError(project_id)
    messages = await get_messages(session, project_id)
    latest_fragment = next((m.fragment for m in reversed(messages) if m.fragment is not None), None)
    latest_user_message = next((m for m in reversed(messages) if m.role == MessageRole.USER), None)
    return ConversationContext(
        project_summary=project.conversation_summary,
        messages=messages,
        latest_fragment=latest_fragment,
        latest_user_message=latest_user_message,
    )
