"""Queries against a real PostgreSQL: creation, ordering, cascades, idempotent replies."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from conversation import (
    build_conversation_payload,
    compute_rolling_conversation_summary,
    load_project_conversation_context,
)
from storage.db import Database
from storage.errors import MessageNotFoundError, ProjectNotFoundError
from storage.models import Fragment, FragmentData, Message, MessageRole, MessageType, Project
from storage.queries import (
    add_user_message,
    create_project,
    get_messages,
    get_project,
    get_reply,
    list_projects,
    save_assistant_reply,
)

FRAGMENT = FragmentData(
    sandbox_url="http://127.0.0.1:3000",
    title="Todo app",
    files={"app/page.tsx": "export default function Page() { return null }"},
    summary="A todo app",
)


async def _reply(
    db: Database, project: Project, user_message: Message, **overrides: object
) -> Message:
    arguments: dict[str, object] = {
        "project_id": project.id,
        "user_message_id": user_message.id,
        "type": MessageType.RESULT,
        "content": "<task_summary>Built it</task_summary>",
        "workflow_id": "wf-1",
        "fragment": FRAGMENT,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "iterations": 3,
        "summarize": compute_rolling_conversation_summary,
    }
    arguments.update(overrides)
    async with db.session() as session:
        return await save_assistant_reply(session, **arguments)  # type: ignore[arg-type]


async def _count(db: Database, model: type) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_create_project_with_first_message(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, message = await create_project(session, "Todo", "make a todo app")
    assert project.name == "Todo" and project.conversation_summary is None
    assert message.project_id == project.id
    assert (message.role, message.type, message.content) == (
        MessageRole.USER,
        MessageType.RESULT,
        "make a todo app",
    )
    assert message.created_at.tzinfo is not None and project.updated_at.tzinfo is not None
    async with clean_db.session() as session:
        loaded = await get_messages(session, project.id)
    assert [m.id for m in loaded] == [message.id]
    assert isinstance(loaded[0].role, MessageRole) and loaded[0].fragment is None


async def test_add_user_message_to_unknown_project(clean_db: Database) -> None:
    missing = uuid.uuid4()
    async with clean_db.session() as session:
        with pytest.raises(ProjectNotFoundError, match=str(missing)):
            await add_user_message(session, missing, "hello")
    assert await _count(clean_db, Message) == 0


async def test_add_user_message_touches_the_project(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, _ = await create_project(session, "p", "first")
        before = project.updated_at
        await add_user_message(session, project.id, "second")
        assert project.updated_at > before


async def test_messages_keep_insertion_order_within_one_transaction(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, _ = await create_project(session, "p", "m0")
        batch = [
            Message(
                project_id=project.id,
                role=MessageRole.USER,
                type=MessageType.RESULT,
                content=f"m{i}",
            )
            for i in range(1, 40)
        ]
        session.add_all(batch)
        await session.commit()
    async with clean_db.session() as session:
        loaded = await get_messages(session, project.id)
    assert [m.content for m in loaded] == [f"m{i}" for i in range(40)]


async def test_messages_oldest_first_across_transactions(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, _ = await create_project(session, "p", "one")
    for content in ("two", "three", "four"):
        async with clean_db.session() as session:
            await add_user_message(session, project.id, content)
    async with clean_db.session() as session:
        assert [m.content for m in await get_messages(session, project.id)] == [
            "one",
            "two",
            "three",
            "four",
        ]


async def test_list_projects_newest_first_with_counts(clean_db: Database) -> None:
    projects = []
    for index in range(3):
        async with clean_db.session() as session:
            project, message = await create_project(session, f"p{index}", "hi")
            projects.append((project, message))
    await _reply(clean_db, *projects[1])
    async with clean_db.session() as session:
        listed = await list_projects(session)
        limited = await list_projects(session, limit=2)
    assert [(item.project.name, item.message_count) for item in listed] == [
        ("p2", 1),
        ("p1", 2),
        ("p0", 1),
    ]
    assert [item.project.name for item in limited] == ["p2", "p1"]


async def test_save_assistant_reply_stores_message_fragment_and_summary(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "make  a\ntodo app")
    reply = await _reply(clean_db, project, user_message)
    assert (reply.role, reply.type, reply.reply_to_id) == (
        MessageRole.ASSISTANT,
        MessageType.RESULT,
        user_message.id,
    )
    assert (reply.workflow_id, reply.prompt_tokens, reply.completion_tokens, reply.iterations) == (
        "wf-1",
        10,
        20,
        3,
    )
    assert reply.fragment is not None and reply.fragment.files == FRAGMENT.files
    async with clean_db.session() as session:
        stored = await get_project(session, project.id)
        saved = await get_reply(session, user_message.id)
    assert stored is not None
    assert stored.conversation_summary == "User: make a todo app\nAssistant: Built it"
    assert saved is not None and saved.id == reply.id
    assert saved.fragment is not None and saved.fragment.title == "Todo app"


async def test_save_assistant_reply_twice_keeps_the_first(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    first = await _reply(clean_db, project, user_message, content="first answer")
    second = await _reply(clean_db, project, user_message, content="second answer", fragment=None)
    assert second.id == first.id and second.content == "first answer"
    assert second.fragment is not None  # returned untouched, fragment included
    async with clean_db.session() as session:
        stored = await get_project(session, project.id)
    assert (
        stored is not None and stored.conversation_summary == "User: hello\nAssistant: first answer"
    )
    assert await _count(clean_db, Message) == 2
    assert await _count(clean_db, Fragment) == 1


async def test_concurrent_replies_give_one_message_and_one_summary_entry(
    clean_db: Database,
) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    replies = await asyncio.gather(
        *(_reply(clean_db, project, user_message, content=f"answer {i}") for i in range(6))
    )
    assert len({reply.id for reply in replies}) == 1
    async with clean_db.session() as session:
        stored = await get_project(session, project.id)
        messages = await get_messages(session, project.id)
    assert [m.role for m in messages] == [MessageRole.USER, MessageRole.ASSISTANT]
    assert stored is not None and stored.conversation_summary is not None
    assert stored.conversation_summary.count("User: hello") == 1
    assert stored.conversation_summary == f"User: hello\nAssistant: {replies[0].content}"


async def test_error_reply_does_not_touch_the_summary(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    reply = await _reply(
        clean_db, project, user_message, type=MessageType.ERROR, content="It broke", fragment=None
    )
    assert reply.type == MessageType.ERROR and reply.fragment is None
    async with clean_db.session() as session:
        stored = await get_project(session, project.id)
    assert stored is not None and stored.conversation_summary is None


async def test_summary_rolls_over_several_turns(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, first = await create_project(session, "p", "one")
    await _reply(clean_db, project, first, content="answer one", fragment=None)
    async with clean_db.session() as session:
        second = await add_user_message(session, project.id, "two")
    await _reply(clean_db, project, second, content="answer two", fragment=None)
    async with clean_db.session() as session:
        stored = await get_project(session, project.id)
    assert stored is not None
    assert stored.conversation_summary == (
        "User: one\nAssistant: answer one\nUser: two\nAssistant: answer two"
    )


async def test_reply_must_answer_a_user_message_of_that_project(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "a", "hello")
        other, _ = await create_project(session, "b", "hi")
    with pytest.raises(MessageNotFoundError, match="is not a message of project"):
        await _reply(clean_db, other, user_message)
    with pytest.raises(MessageNotFoundError):
        await _reply(
            clean_db,
            project,
            Message(id=uuid.uuid4(), project_id=project.id, role="USER", type="RESULT", content=""),
        )
    reply = await _reply(clean_db, project, user_message)
    with pytest.raises(MessageNotFoundError, match="is not a USER message"):
        await _reply(clean_db, project, reply)
    with pytest.raises(ProjectNotFoundError):
        await _reply(clean_db, Project(id=uuid.uuid4(), name="gone"), user_message)
    assert await _count(clean_db, Message) == 3  # two first messages + one reply


async def test_deleting_a_project_cascades(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    await _reply(clean_db, project, user_message)
    async with clean_db.session() as session:
        await session.execute(delete(Project).where(Project.id == project.id))
        await session.commit()
    assert (await _count(clean_db, Message), await _count(clean_db, Fragment)) == (0, 0)


async def test_deleting_a_user_message_removes_its_reply_and_fragment(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    await _reply(clean_db, project, user_message)
    async with clean_db.session() as session:
        await session.execute(delete(Message).where(Message.id == user_message.id))
        await session.commit()
    assert (await _count(clean_db, Message), await _count(clean_db, Fragment)) == (0, 0)
    assert await _count(clean_db, Project) == 1


async def test_one_fragment_per_message(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, user_message = await create_project(session, "p", "hello")
    reply = await _reply(clean_db, project, user_message)
    async with clean_db.session() as session:
        session.add(Fragment(message_id=reply.id, sandbox_url="u", title="t", files={}))
        with pytest.raises(IntegrityError, match="uq_fragments_message_id"):
            await session.commit()


async def test_load_conversation_context(clean_db: Database) -> None:
    async with clean_db.session() as session:
        project, first = await create_project(session, "p", "make a todo app")
    await _reply(clean_db, project, first, content="made it")
    async with clean_db.session() as session:
        second = await add_user_message(session, project.id, "add dark mode")
    newer = FRAGMENT.model_copy(update={"title": "Dark todo"})
    await _reply(clean_db, project, second, content="dark now", fragment=newer)
    async with clean_db.session() as session:
        third = await add_user_message(session, project.id, "add a footer")
    await _reply(clean_db, project, third, type=MessageType.ERROR, content="failed", fragment=None)

    async with clean_db.session() as session:
        context = await load_project_conversation_context(session, project.id)
    assert [m.content for m in context.messages] == [
        "make a todo app",
        "made it",
        "add dark mode",
        "dark now",
        "add a footer",
        "failed",
    ]
    assert context.latest_fragment is not None and context.latest_fragment.title == "Dark todo"
    assert context.latest_user_message is not None and context.latest_user_message.id == third.id
    assert context.project_summary == (
        "User: make a todo app\nAssistant: made it\nUser: add dark mode\nAssistant: dark now"
    )
    payload = build_conversation_payload(
        context.project_summary, context.messages, context.latest_user_message, "add a footer"
    )
    assert "Assistant: failed\n</conversation_history>" in payload
    assert "User: add a footer\n" not in payload


async def test_load_conversation_context_of_unknown_project(clean_db: Database) -> None:
    async with clean_db.session() as session:
        with pytest.raises(ProjectNotFoundError):
            await load_project_conversation_context(session, uuid.uuid4())
