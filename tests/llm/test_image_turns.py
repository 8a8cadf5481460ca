"""The model's side of images, without a sandbox: the activities on real PostgreSQL and the
scripted model over HTTP. The current message's images arrive downscaled as data URLs, the
transcript keeps references, a follow-up names them, and a text-only model's refusal is a
clear ERROR that is not retried."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import LlmActivities
from activities.persistence import PersistenceActivities
from agent.llm import LLMErrorType, make_openai_client
from contract import AgentTurnInput, RecordMessageInput, StartRunInput
from scripted_llm import scripted_llm_server
from scripted_llm.protocol import first_user_text
from storage import images
from storage.db import Database
from storage.image_files import check_image
from storage.transcript import TranscriptEntry
from tests.image_samples import image_bytes
from tests.workflows.conftest import settings_for

SCRIPT = {
    "text_only_models": ["text-only"],
    "default": {"turns": [{"content": "<task_summary>Done.</task_summary>"}]},
}


async def _record(
    persistence: PersistenceActivities,
    db: Database,
    project_id: uuid.UUID,
    prompt: str,
    files: list[tuple[str, bytes]],
    first: bool,
) -> uuid.UUID:
    """What a client and the project workflow do: store the images, record the message."""
    message_id = uuid.uuid4()
    checked = [check_image(name, data) for name, data in files]
    async with db.session() as session:
        ids = await images.store_for_message(
            session, project_id=project_id, message_id=message_id, images=checked
        )
    await ActivityEnvironment().run(
        persistence.record_message,
        RecordMessageInput(
            project_id=project_id,
            message_id=message_id,
            prompt=prompt,
            new_project_name="images" if first else None,
            image_ids=ids,
        ),
    )
    return message_id


async def _user_entry(db: Database, run_id: uuid.UUID) -> object:
    async with db.session() as session:
        return await session.scalar(
            sa.select(TranscriptEntry.message).where(
                TranscriptEntry.run_id == run_id, TranscriptEntry.seq == 1
            )
        )


@pytest.mark.parametrize("model", ["scripted", "text-only"])
async def test_images_reach_the_model_or_are_refused_clearly(
    clean_db: Database, database_url: str, model: str
) -> None:
    async with scripted_llm_server(SCRIPT) as llm:
        settings = settings_for(llm.base_url, qai_model=model)
        client = make_openai_client(settings)
        services = SimpleNamespace(settings=settings, db=clean_db, llm=client)
        persistence = PersistenceActivities(services)  # type: ignore[arg-type]
        turns = LlmActivities(services)  # type: ignore[arg-type]
        env = ActivityEnvironment()
        project_id = uuid.uuid4()
        mock = image_bytes("PNG", (3136, 1960))
        first = await _record(
            persistence, clean_db, project_id, "Build this page", [("Mock Up.png", mock)], True
        )
        run = await env.run(
            persistence.start_run, StartRunInput(project_id=project_id, run_id=first)
        )
        assert run.uploads == 1
        entry = await _user_entry(clean_db, first)
        assert isinstance(entry["content"], list)
        assert entry["content"][1]["image_url"]["url"].startswith("qai-image:")
        assert "public/uploads/mock-up.png" in entry["content"][0]["text"]
        assert "/uploads/mock-up.png" in entry["content"][0]["text"]
        assert "base64" not in json.dumps(entry)

        if model == "text-only":
            with pytest.raises(ApplicationError) as refused:
                await env.run(
                    turns.agent_turn, AgentTurnInput(run_id=first, iteration=1, model=model)
                )
            assert refused.value.message == (
                "the model text-only does not accept images; remove the images or choose a "
                "vision model"
            )
            assert refused.value.non_retryable
            assert refused.value.type == LLMErrorType.IMAGES_NOT_SUPPORTED
            await client.close()
            return

        await env.run(turns.agent_turn, AgentTurnInput(run_id=first, iteration=1, model=model))
        [request] = llm.requests()
        [part] = request.images
        assert (part["content_type"], part["width"], part["height"]) == ("image/png", 1568, 980)

        # A follow-up with an image of the same name: a name of its own in the workspace; the
        # first image is named in the history, only the new one is sent.
        second = await _record(
            persistence,
            clean_db,
            project_id,
            "Use this logo",
            [("mock up.png", image_bytes("PNG", (100, 80), color=(0, 0, 200)))],
            False,
        )
        await env.run(persistence.start_run, StartRunInput(project_id=project_id, run_id=second))
        llm.reset()
        await env.run(turns.agent_turn, AgentTurnInput(run_id=second, iteration=1, model=model))
        [request] = llm.requests()
        text = first_user_text(request.messages)
        assert "[image: Mock Up.png, 3136×1960]" in text
        assert "public/uploads/mock-up-2.png" in text
        assert [(p["width"], p["height"]) for p in request.images] == [(100, 80)]
        await client.close()


async def test_deleting_a_project_keeps_images_another_project_uses(clean_db: Database) -> None:
    from storage import versions
    from storage.queries import record_user_message

    shared = check_image("shared.png", image_bytes("PNG"))
    own = check_image("own.png", image_bytes("PNG", color=(1, 2, 3)))
    projects = [uuid.uuid4(), uuid.uuid4()]
    async with clean_db.session() as session:
        for project_id, attached in zip(projects, ([shared, own], [shared]), strict=True):
            message_id = uuid.uuid4()
            await images.store_for_message(
                session, project_id=project_id, message_id=message_id, images=attached
            )
            # Stored again (a resubmission): nothing new.
            await images.store_for_message(
                session, project_id=project_id, message_id=message_id, images=attached
            )
            await record_user_message(
                session,
                project_id=project_id,
                message_id=message_id,
                content="x",
                new_project_name="p",
            )
        assert await images.count_images(session) == 2
        await versions.delete_project(session, projects[0])
        assert await images.count_images(session) == 1
        assert await images.project_image(session, projects[1], shared.sha256) is not None
        assert await images.project_image(session, projects[0], shared.sha256) is None
        await versions.delete_project(session, projects[1])
        assert await images.count_images(session) == 0


async def test_snapshots_keep_the_project_images_by_reference(clean_db: Database) -> None:
    """Every run's snapshot holds public/uploads/; the bytes of the project's own images are
    stored once (in `images`), and loading a snapshot puts them back."""
    from sandboxes.snapshot import WorkspaceSnapshot
    from storage import snapshots, versions
    from storage.queries import record_user_message

    photo = check_image("photo.jpg", image_bytes("JPEG", (800, 600)))
    stranger = image_bytes("PNG", (300, 300), color=(9, 9, 9))  # the agent's own file
    project_id, message_id = uuid.uuid4(), uuid.uuid4()
    async with clean_db.session() as session:
        await images.store_for_message(
            session, project_id=project_id, message_id=message_id, images=[photo]
        )
        await record_user_message(
            session, project_id=project_id, message_id=message_id, content="x", new_project_name="p"
        )
        workspace = WorkspaceSnapshot(
            files={
                "app/page.tsx": b"export default function Page() {}\n",
                "public/uploads/photo.jpg": photo.data,
                "public/uploads/other.png": stranger,
            }
        )
        await snapshots.save(
            session, project_id=project_id, run_id=message_id, snapshot=workspace, tool_call_id=None
        )
        await session.commit()
        row = await session.get(snapshots.SnapshotRow, message_id)
        assert row is not None and row.size == workspace.size
        assert len(row.archive) < len(photo.data)  # the photo is not in the archive
        loaded = await snapshots.latest(session, project_id)
        assert loaded is not None and loaded.files == workspace.files and loaded.skipped == []
        # Deleting the project deletes the snapshot and the image together.
        await versions.delete_project(session, project_id)
        assert await images.count_images(session) == 0
