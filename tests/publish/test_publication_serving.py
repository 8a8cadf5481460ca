"""Published apps without a sandbox: the gateway serves a stored static build from the blob
store, with immutable caching for hashed assets; a failed build leaves the live one served;
old builds are pruned; unpublish answers 404; bad publish input is refused and writes nothing.

PostgreSQL and the gateway's sockets are real; the builds are files put in the blob store as
the publish activity stores them (the real build is in `test_publish_flow.py`).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from activities.publishing import relevant_lines, unpack
from gateway.server import running_gateway
from runtime.preview_urls import publish_url
from storage import publications
from storage.blobs import FileBlobs
from storage.db import Database
from storage.models import Fragment, Message, MessageRole, MessageType
from storage.publications import PublicationMode, PublicationRow
from submission import PublishRefused, check_publish
from tests.previews.test_gateway import gateway_settings, new_project


async def add_result(db: Database, project_id: uuid.UUID, title: str) -> uuid.UUID:
    message_id = uuid.uuid4()
    async with db.session() as session:
        message = Message(
            id=message_id,
            project_id=project_id,
            role=MessageRole.ASSISTANT,
            type=MessageType.RESULT,
            content=title,
            fragment=None,
        )
        session.add(message)
        message.fragment = Fragment(
            message_id=message_id, sandbox_url="", title=title, files={}, summary=title
        )
        await session.commit()
        return message.fragment.id


async def publish_files(
    db: Database,
    blobs: FileBlobs,
    project_id: uuid.UUID,
    fragment_id: uuid.UUID,
    files: dict[str, bytes],
    keep: int = 3,
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """What the publish activity does after a good build."""
    publication_id = uuid.uuid4()
    async with db.session() as session:
        await publications.start_building(
            session, publication_id=publication_id, project_id=project_id, fragment_id=fragment_id
        )
    for path, data in files.items():
        await blobs.put(publications.blob_prefix(project_id, publication_id) + path, data)
    async with db.session() as session:
        old = await publications.go_live(
            session,
            publication_id=publication_id,
            project_id=project_id,
            mode=PublicationMode.STATIC,
            files=len(files),
            size=1,
            build_seconds=1.0,
            keep=keep,
        )
    for gone in old:
        await blobs.delete_prefix(publications.blob_prefix(project_id, gone))
    return publication_id, old


def site(text: str) -> dict[str, bytes]:
    return {
        "index.html": f"<html><body>{text}</body></html>".encode(),
        "about.html": b"<html>about</html>",
        "404.html": b"<html>custom 404</html>",
        "_next/static/chunks/app-abc123.js": b"console.log(1)",
    }


@pytest.mark.slow  # a real gateway, blob store and database round trip per request
async def test_static_publications_are_served_from_the_blob_store(
    clean_db: Database, workflow_env: WorkflowEnvironment, tmp_path
) -> None:
    settings = gateway_settings(qai_data_dir=tmp_path)
    blobs = FileBlobs(settings.data_dir / "blobs")
    project_id = await new_project(clean_db)
    url = publish_url(settings, project_id)
    assert url == f"http://{project_id}.app.localhost:{settings.qai_preview_port}/"
    headers = {"Host": f"{project_id}.app.localhost:{settings.qai_preview_port}"}
    base = f"http://127.0.0.1:{settings.qai_preview_port}"
    first = await add_result(clean_db, project_id, "one")
    async with (
        running_gateway(settings, clean_db, workflow_env.client),
        httpx.AsyncClient(base_url=base, headers=headers) as http,
    ):
        assert (await http.get("/")).status_code == 404  # nothing published yet
        one, _ = await publish_files(clean_db, blobs, project_id, first, site("Version one"))
        await _wait_for(http, "Version one")  # the gateway looks the build up again within 1 s
        page = await http.get("/")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "immutable" not in page.headers["cache-control"]
        asset = await http.get("/_next/static/chunks/app-abc123.js")
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/about")).text == "<html>about</html>"
        missing = await http.get("/nope")
        assert missing.status_code == 404 and "custom 404" in missing.text
        assert (await http.get("/../../etc/passwd")).status_code == 404
        assert (await http.get("/_next/webpack-hmr")).status_code == 404
        assert (await http.post("/", content=b"x")).status_code == 405
        head = await http.head("/")
        assert head.status_code == 200 and head.content == b""

        # A failed build of a later version: the earlier one stays served.
        second = await add_result(clean_db, project_id, "two")
        failed = uuid.uuid4()
        async with clean_db.session() as session:
            await publications.start_building(
                session, publication_id=failed, project_id=project_id, fragment_id=second
            )
            await publications.fail(session, failed, "Type error: x")
            latest = await publications.latest(session, project_id)
            served = await publications.served(session, project_id)
        assert latest is not None and latest.status == "failed" and latest.error == "Type error: x"
        assert served is not None and served.id == one
        assert "Version one" in (await http.get("/")).text

        # Republishing at the same URL; only the newest 3 builds are kept.
        ids = [one]
        for n in range(2, 6):
            new, _ = await publish_files(clean_db, blobs, project_id, second, site(f"V{n}"))
            ids.append(new)
            await _wait_for(http, f"V{n}")
        kept = [p.split("/")[2] for p in await blobs.list(publications.project_prefix(project_id))]
        assert set(kept) == {str(i) for i in ids[-3:]}
        async with clean_db.session() as session:
            rows = await session.execute(
                sa.select(PublicationRow.id, PublicationRow.status).where(
                    PublicationRow.project_id == project_id
                )
            )
            statuses = dict(rows.all())
        assert statuses == {
            ids[-3]: "superseded",
            ids[-2]: "superseded",
            ids[-1]: "live",
            failed: "failed",
        }

        # Unpublish: every build and row goes, and the URL answers 404.
        async with clean_db.session() as session:
            assert len(await publications.remove_all(session, project_id)) == 4
        await blobs.delete_prefix(publications.project_prefix(project_id))
        await _wait_for(http, "No app is published", status=404)
        # The dev preview's host is unaffected by the published one's pattern.
        preview = await http.get("/", headers={"Host": f"{project_id}.preview.localhost"})
        assert "No app" not in preview.text


async def _wait_for(http: httpx.AsyncClient, text: str, status: int = 200) -> None:
    import asyncio

    async with asyncio.timeout(10):
        while True:
            response = await http.get("/")
            if response.status_code == status and text in response.text:
                return
            await asyncio.sleep(0.2)


async def test_bad_publish_input_is_refused_and_writes_nothing(clean_db: Database) -> None:
    project_id = await new_project(clean_db)
    other = await new_project(clean_db)
    with pytest.raises(PublishRefused) as no_result:
        await check_publish(clean_db, project_id, None)
    assert no_result.value.status == 409
    with pytest.raises(PublishRefused) as unknown:
        await check_publish(clean_db, project_id, uuid.uuid4())
    assert unknown.value.status == 404
    foreign = await add_result(clean_db, other, "theirs")
    with pytest.raises(PublishRefused) as theirs:
        await check_publish(clean_db, project_id, foreign)
    assert theirs.value.status == 422
    mine = await add_result(clean_db, project_id, "mine")
    request = await check_publish(clean_db, project_id, None)
    assert request.fragment_id == mine
    async with clean_db.session() as session:
        assert await publications.latest(session, project_id) is None  # nothing written


def test_build_errors_keep_relevant_lines_without_sandbox_paths() -> None:
    log = (
        "   ▲ Next.js 15.3.0\n   Creating an optimized production build ...\n"
        "\x1b[31mFailed to compile.\x1b[39m\n\n./app/page.tsx:3:7\n"
        "Type error: Type 'number' is not assignable to type 'string'.\n"
        "  at /home/user/app/page.tsx:3\nNext.js build worker exited with code: 1\n"
    )
    text = relevant_lines(log)
    assert "Failed to compile." in text and "Type error" in text and "./app/page.tsx:3:7" in text
    assert "/home/user" not in text and "\x1b" not in text
    assert "Creating an optimized" not in text


def test_unpack_drops_source_maps_links_and_escapes() -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [("./index.html", b"hi"), ("./a.js.map", b"{}"), ("../x", b"no")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    assert unpack(buffer.getvalue()) == {"index.html": b"hi"}
