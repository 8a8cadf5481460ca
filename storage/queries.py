"""Every SQL statement about projects and messages lives here.

Functions take an `AsyncSession`. Writers commit before returning (and roll
back on error); readers leave the session's transaction to its owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from storage.errors import MessageNotFoundError, ProjectNotFoundError
from storage.models import Fragment, FragmentData, Message, MessageRole, MessageType, Project

_MESSAGE_ORDER = (Message.created_at, Message.seq)


@dataclass(frozen=True)
class ProjectListing:
    project: Project
    message_count: int


async def create_project(
    session: AsyncSession, name: str, first_message: str
) -> tuple[Project, Message]:
    """A project and its first USER message, in one transaction."""
    project = Project(name=name)
    message = Message(
        project_id=project.id,
        role=MessageRole.USER,
        type=MessageType.RESULT,
        content=first_message,
        fragment=None,
    )
    session.add(project)
    await session.flush()  # the project row must exist before its message
    session.add(message)
    try:
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return project, message


async def add_user_message(session: AsyncSession, project_id: uuid.UUID, content: str) -> Message:
    """A follow-up USER message; raises ProjectNotFoundError for an unknown project."""
    try:
        project = await _project_for_update(session, project_id)
        message = Message(
            project_id=project_id,
            role=MessageRole.USER,
            type=MessageType.RESULT,
            content=content,
            fragment=None,
        )
        session.add(message)
        project.updated_at = func.clock_timestamp()
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return message


async def record_user_message(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    new_project_name: str | None = None,
) -> bool:
    """Write a USER message under the id its client chose, once; True if it is already answered.

    With `new_project_name` the project is created first when missing. Calling this again with
    the same ids changes nothing, so the workflow that records messages can retry freely.
    """
    try:
        if new_project_name is not None:
            await session.execute(
                insert(Project)
                .values(id=project_id, name=new_project_name)
                .on_conflict_do_nothing(index_elements=[Project.id])
            )
        project = await _project_for_update(session, project_id)
        existing = await session.get(Message, message_id, populate_existing=True)
        if existing is None:
            session.add(
                Message(
                    id=message_id,
                    project_id=project_id,
                    role=MessageRole.USER,
                    type=MessageType.RESULT,
                    content=content,
                    fragment=None,
                )
            )
            project.updated_at = func.clock_timestamp()
        elif existing.project_id != project_id or existing.role != MessageRole.USER:
            raise MessageNotFoundError(message_id, f"is not a USER message of project {project_id}")
        answered = existing is not None and await get_reply(session, message_id) is not None
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return answered


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> Project | None:
    return await session.get(Project, project_id, populate_existing=True)


async def list_projects(session: AsyncSession, limit: int = 50) -> list[ProjectListing]:
    """Newest projects first, each with how many messages it has."""
    count = func.count(Message.id)
    statement = (
        select(Project, count)
        .outerjoin(Message, Message.project_id == Project.id)
        .group_by(Project.id)
        .order_by(Project.created_at.desc(), Project.id.desc())
        .limit(limit)
    )
    rows = (await session.execute(statement)).all()
    return [ProjectListing(project=project, message_count=n) for project, n in rows]


async def get_messages(session: AsyncSession, project_id: uuid.UUID) -> list[Message]:
    """The project's messages oldest first, fragments loaded."""
    statement = (
        select(Message)
        .where(Message.project_id == project_id)
        .order_by(*_MESSAGE_ORDER)
        .options(selectinload(Message.fragment))
        .execution_options(populate_existing=True)
    )
    return list((await session.scalars(statement)).all())


async def get_message(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    """One message, its fragment loaded."""
    statement = (
        select(Message)
        .where(Message.id == message_id)
        .options(selectinload(Message.fragment))
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def get_reply(session: AsyncSession, user_message_id: uuid.UUID) -> Message | None:
    """The assistant message answering `user_message_id`, if it was saved."""
    statement = (
        select(Message)
        .where(Message.reply_to_id == user_message_id)
        .options(selectinload(Message.fragment))
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def save_assistant_reply(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    user_message_id: uuid.UUID,
    type: MessageType,
    content: str,
    workflow_id: str | None,
    fragment: FragmentData | None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    iterations: int | None = None,
    summarize: Callable[[str | None, str, str], str],
    cached_tokens: int | None = None,
    model_calls: int | None = None,
) -> Message:
    """Save the reply to a user message exactly once, however often it is called.

    The project row is locked for the transaction, so concurrent calls queue up;
    a call that finds the reply already saved returns it untouched. A RESULT
    reply also folds the exchange into the project's rolling summary:
    `summarize(previous summary, user text, reply)` is the conversation's rule,
    passed in because storage sits below the conversation package.
    """
    try:
        project = await _project_for_update(session, project_id)
        existing = await get_reply(session, user_message_id)
        if existing is not None:
            await session.commit()
            return existing

        user_message = await session.get(Message, user_message_id, populate_existing=True)
        if user_message is None or user_message.project_id != project_id:
            raise MessageNotFoundError(user_message_id, f"is not a message of project {project_id}")
        if user_message.role != MessageRole.USER:
            raise MessageNotFoundError(user_message_id, "is not a USER message")

        reply = Message(
            project_id=project_id,
            role=MessageRole.ASSISTANT,
            type=MessageType(type),
            content=content,
            workflow_id=workflow_id,
            reply_to_id=user_message_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            model_calls=model_calls,
            iterations=iterations,
            fragment=None,
        )
        session.add(reply)
        if fragment is not None:
            reply.fragment = Fragment(
                message_id=reply.id,
                sandbox_url=fragment.sandbox_url,
                title=fragment.title,
                files=dict(fragment.files),
                summary=fragment.summary,
                checks=fragment.checks,
                screenshot_id=fragment.screenshot_id,
            )
        if reply.type == MessageType.RESULT:
            project.conversation_summary = summarize(
                project.conversation_summary, user_message.content, content
            )
        project.updated_at = func.clock_timestamp()
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    return reply


async def _project_for_update(session: AsyncSession, project_id: uuid.UUID) -> Project:
    statement = (
        select(Project)
        .where(Project.id == project_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    project = (await session.scalars(statement)).one_or_none()
    if project is None:
        raise ProjectNotFoundError(project_id)
    return project
