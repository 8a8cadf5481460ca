"""A snapshot's total cap (QAI_SNAPSHOT_MAX_BYTES): what is kept, in which order, and what the
model is told. The local backend's reader runs on a plain directory standing in for the
overlay's upper layer (no sandbox needed)."""

from __future__ import annotations

from pathlib import Path

from sandboxes.local.upper import read_upper
from sandboxes.snapshot import MAX_FILE_BYTES, WorkspaceSnapshot, fit

MB = 1_000_000


def _write(root: Path, relative: str, size: int) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        (relative.encode() + b"\n") * (size // (len(relative) + 1))
        + b"x" * (size % (len(relative) + 1))
    )


def test_the_snapshot_cap_is_enforced_in_its_documented_order(tmp_path: Path) -> None:
    _write(tmp_path, "package.json", 2_000)
    _write(tmp_path, "app/page.tsx", 40_000)
    _write(tmp_path, "app/big-data.json", 4 * MB)  # a source file, but large
    for n in range(8):
        _write(tmp_path, f"public/photo-{n}.png", 3 * MB)  # 24 MB of assets
    _write(tmp_path, "public/huge.bin", MAX_FILE_BYTES + 1)  # over the per-file cap

    snapshot = read_upper(tmp_path, {}, max_bytes=10 * MB)

    assert snapshot.size <= 10 * MB
    assert {"package.json", "app/page.tsx", "app/big-data.json"} <= set(snapshot.files)
    photos = [p for p in snapshot.files if p.startswith("public/photo-")]
    assert len(photos) == 1  # 10 MB - 4.04 MB of sources leaves room for one 3 MB photo
    assert len(snapshot.over_cap) == 7 and all(p.startswith("public/") for p in snapshot.over_cap)
    assert snapshot.skipped == ["public/huge.bin"]
    notice = snapshot.cap_notice(10 * MB)
    assert notice is not None
    assert "10 MB" in notice and "7 file(s) were NOT saved" in notice
    assert snapshot.over_cap[0] in notice
    # The archive keeps the list, so a restored version still knows what it lacks.
    again = WorkspaceSnapshot.from_archive(snapshot.to_archive())
    assert again.over_cap == snapshot.over_cap and again.files == snapshot.files

    under = read_upper(tmp_path, {}, max_bytes=100 * MB)
    assert under.over_cap == [] and under.cap_notice(100 * MB) is None


def test_files_are_kept_package_files_first_then_sources_then_the_rest_smallest_first() -> None:
    sizes = {
        "public/a.png": 10,
        "package-lock.json": 50,
        "app/page.tsx": 30,
        "app/layout.tsx": 20,
        "public/b.png": 5,
        "Makefile": 15,
    }
    kept, left_out = fit(sizes, 100)
    assert kept == [
        "package-lock.json",
        "Makefile",
        "app/layout.tsx",
        "public/b.png",
        "public/a.png",
    ]
    assert left_out == ["app/page.tsx"]


def test_the_archive_is_streamed_a_member_at_a_time() -> None:
    import io
    import zipfile

    from api.archive import app_zip_chunks

    workspace = WorkspaceSnapshot(
        files={"app/page.tsx": b"export default 1\n", "public/a.bin": b"\0" * 2 * MB},
        deleted=["app/globals.css"],
    )
    chunks = app_zip_chunks(workspace, "qai-test")
    first = next(chunks)
    assert first.startswith(b"PK\x03\x04")  # a member went out before the rest was made
    rest = list(chunks)
    assert len(rest) > 5 and max(len(c) for c in [first, *rest]) < MB  # never the whole zip
    archive = zipfile.ZipFile(io.BytesIO(first + b"".join(rest)))
    names = set(archive.namelist())
    assert {"qai-test/app/page.tsx", "qai-test/public/a.bin", "qai-test/package.json"} <= names
    assert "qai-test/app/globals.css" not in names
    assert archive.read("qai-test/app/page.tsx") == b"export default 1\n"
    assert archive.testzip() is None
