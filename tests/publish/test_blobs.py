"""The blob store's two implementations behave the same: files, and S3 through moto's server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from runtime.processes import free_port
from storage.blobs import BlobStore, FileBlobs, S3Blobs, check_key


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's S3-compatible server on loopback, as a subprocess (an honest stand-in for MinIO)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


async def exercise(store: BlobStore) -> None:
    assert await store.list("builds/") == []
    assert await store.get("builds/a/index.html") is None
    await store.put("builds/a/index.html", b"<html>a</html>")
    await store.put("builds/a/_next/static/x.js", b"js")
    await store.put("builds/b/index.html", b"b")
    await store.put("builds/a/index.html", b"<html>A</html>")  # replaced
    assert await store.get("builds/a/index.html") == b"<html>A</html>"
    assert await store.list("builds/a/") == ["builds/a/_next/static/x.js", "builds/a/index.html"]
    assert await store.list("builds/") == [
        "builds/a/_next/static/x.js",
        "builds/a/index.html",
        "builds/b/index.html",
    ]
    assert await store.delete_prefix("builds/a/") == 2
    await store.delete(["builds/missing"])  # ignored
    assert await store.list("builds/") == ["builds/b/index.html"]
    assert await store.get("builds/a/index.html") is None


async def test_file_blobs(tmp_path) -> None:
    store = FileBlobs(tmp_path / "blobs")
    await exercise(store)
    assert not (tmp_path / "blobs" / "builds" / "a").exists()  # emptied directories pruned


async def test_s3_blobs(moto_url: str) -> None:
    store = S3Blobs(
        bucket="qai-test",
        endpoint_url=moto_url,
        access_key_id="test",
        secret_access_key="test",
    )
    try:
        await exercise(store)
    finally:
        await store.close()


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "a//b", "a/./b", ""])
def test_keys_stay_inside(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)
