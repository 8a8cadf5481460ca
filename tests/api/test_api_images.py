"""Images through the API with no worker: every refusal writes nothing, the body limit rises
only for the two submission routes, and an accepted image is stored once, cleaned, and served."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
import sqlalchemy as sa

from storage.db import Database
from storage.images import ImageRow, MessageImage
from storage.models import Project
from tests.api.test_api_input import _serve
from tests.image_samples import bad_images, gps_of, image_bytes, size_of


@pytest.fixture
async def http(workflow_env, database_url: str, clean_db: Database):
    async for client in _serve(workflow_env, database_url, qai_rate_limit="50/minute"):
        yield client


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.session() as session:
        counts = []
        for table in (Project, ImageRow, MessageImage):
            counts.append(
                int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            )
    return tuple(counts)  # type: ignore[return-value]


def _parts(files: list[tuple[str, bytes]], content_type: str | None = None) -> list:
    return [("images", (name, data, content_type or "")) for name, data in files]


async def test_every_bad_image_is_refused_and_nothing_is_written(
    http: httpx.AsyncClient, clean_db: Database
) -> None:
    project = uuid.uuid4()
    for case, files, words in bad_images():
        for path in ("/api/projects", f"/api/projects/{project}/messages"):
            response = await http.post(path, data={"prompt": "Build this"}, files=_parts(files))
            # The images are checked before the project is looked up: 422 on both routes.
            assert response.status_code == 422, (case, path, response.text)
            assert words in response.json()["detail"], (case, path)
    # The claimed type is the part's own header, whatever the file name says.
    response = await http.post(
        "/api/projects",
        data={"prompt": "Build this"},
        files=[("images", ("logo.png", b"<svg/>", "image/svg+xml"))],
    )
    assert response.status_code == 422 and "is an SVG" in response.json()["detail"]
    # Malformed forms, in words.
    no_prompt = await http.post("/api/projects", files=_parts([("a.png", image_bytes())]))
    assert no_prompt.status_code == 422 and "prompt is missing" in no_prompt.json()["detail"]
    not_a_file = await http.post(
        "/api/projects", data={"prompt": "x"}, files=[("images", (None, b"text"))]
    )
    assert not_a_file.status_code == 422 and "must be files" in not_a_file.json()["detail"]
    empty_prompt = await http.post(
        "/api/projects", data={"prompt": "  "}, files=_parts([("a.png", image_bytes())])
    )
    assert "the prompt is empty" in empty_prompt.json()["detail"]
    assert await _counts(clean_db) == (0, 0, 0)


async def test_the_body_limit_rises_only_for_multipart_submissions(
    http: httpx.AsyncClient, clean_db: Database
) -> None:
    big = b"x" * (21 * 1024 * 1024)  # past four images at their limit
    response = await http.post("/api/projects", data={"prompt": "x"}, files=_parts([("a", big)]))
    assert response.status_code == 413
    assert "larger than 20.1 MB" in response.json()["detail"]
    # Just over 64 KB is fine in a form (the image itself is then checked) ...
    medium = image_bytes("PNG") + b"\0" * 100_000
    ok = await http.post("/api/projects", data={"prompt": "x"}, files=_parts([("a.png", medium)]))
    assert ok.status_code == 201, ok.text
    # ... but not as JSON, nor on any other route.
    json_big = await http.post("/api/projects", json={"prompt": "y" * 70_000})
    assert json_big.status_code == 413 and "64 KB" in json_big.json()["detail"]
    other = await http.post(
        f"/api/projects/{uuid.uuid4()}/cancel", files=_parts([("a.png", medium)])
    )
    assert other.status_code == 413


async def test_an_accepted_image_is_stored_once_cleaned_and_served(
    http: httpx.AsyncClient, clean_db: Database
) -> None:
    photo = image_bytes("JPEG", (320, 200), gps=True)
    assert gps_of(photo)
    response = await http.post(
        "/api/projects",
        data={"prompt": "Use this photo as the hero"},
        files=[
            ("images", ("photo.jpg", photo, "image/jpeg")),
            ("images", ("again.jpg", photo, "image/jpeg")),
        ],
    )
    assert response.status_code == 201, response.text
    project_id = response.json()["project_id"]
    # Stored once by content, referenced twice by the message.
    assert (await _counts(clean_db))[1:] == (1, 2)
    async with clean_db.session() as session:
        row = (await session.execute(sa.select(ImageRow))).scalar_one()
    assert row.id == hashlib.sha256(row.data).hexdigest()
    served = await http.get(f"/api/projects/{project_id}/images/{row.id}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert gps_of(served.content) == {} and size_of(served.content) == (320, 200)
    # Another project cannot read it by its hash.
    elsewhere = await http.get(f"/api/projects/{uuid.uuid4()}/images/{row.id}")
    assert elsewhere.status_code == 404
    # A JSON submission stays as it was.
    plain = await http.post("/api/projects", json={"prompt": "A todo app"})
    assert plain.status_code == 201
