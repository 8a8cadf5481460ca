"""Workspace snapshots on real sandboxes: every kind of change comes back on a new sandbox.

The local backend reads its overlay's upper layer; the generic way (E2B's) lists and hashes the
workspace with commands. Both run here against the same real sandbox and must agree.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.settings import SandboxNetwork
from sandboxes.base import Sandbox
from sandboxes.local.backend import LocalBackend
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.snapshot import WorkspaceSnapshot

pytestmark = pytest.mark.sandbox

CHANGES = """
set -e
echo 'export const x = 1;' > lib.ts
mkdir -p src/deep && printf 'deep\\n' > src/deep/file.txt
sed -i 's/tiny template/edited template/' index.html
rm notes/readme.txt
printf '#!/bin/sh\\necho run\\n' > run.sh && chmod 755 run.sh
ln -s src/deep/file.txt link.txt
head -c 300 /dev/urandom > blob.bin
mkdir -p node_modules/pkg .next && echo dep > node_modules/pkg/index.js && echo b > .next/x
echo cache > .npm-not-a-cache.txt
"""


async def _state(sandbox: Sandbox) -> str:
    listing = await sandbox.commands.run(
        "find . -path ./node_modules -prune -o -path ./.next -prune -o -printf '%y %m %p %l\\n' "
        "| sort && cat index.html lib.ts src/deep/file.txt && sha256sum blob.bin",
        timeout=30,
    )
    return listing.stdout


async def test_every_kind_of_change_comes_back_on_a_new_sandbox(backend: LocalBackend) -> None:
    index = await backend.template_index("tiny")
    assert set(index) == {"index.html", "notes/readme.txt"}
    first = await backend.create("tiny", timeout=300)
    second = None
    try:
        await first.commands.run(CHANGES, timeout=30)
        snapshot = await first.snapshot(index)

        assert sorted(snapshot.files) == [
            ".npm-not-a-cache.txt",
            "blob.bin",
            "index.html",
            "lib.ts",
            "run.sh",
            "src/deep/file.txt",
        ]
        assert snapshot.files["index.html"] == b"<h1>edited template</h1>\n"
        assert snapshot.modes["run.sh"] == 0o755
        assert snapshot.symlinks == {"link.txt": "src/deep/file.txt"}
        assert snapshot.deleted == ["notes/readme.txt"]
        assert not snapshot.needs_install()
        assert "blob.bin" not in snapshot.source_files()
        assert snapshot.source_files()["lib.ts"] == "export const x = 1;\n"

        # The generic way (hashes and listing through commands) finds the same changes.
        generic = await Sandbox.snapshot(first, index)
        assert generic == snapshot

        # Through the stored form and onto a new sandbox, the workspace is the same.
        stored = WorkspaceSnapshot.from_archive(snapshot.to_archive())
        assert stored == snapshot
        second = await backend.create("tiny", timeout=300)
        await second.restore(stored)
        assert await _state(second) == await _state(first)
        assert await second.snapshot(index) == snapshot
    finally:
        await first.kill()
        if second is not None:
            await second.kill()


async def test_a_directory_removed_and_made_again_keeps_only_its_new_files(
    backend: LocalBackend,
) -> None:
    index = await backend.template_index("tiny")
    sandbox = await backend.create("tiny", timeout=300)
    try:
        await sandbox.commands.run(
            "rm -rf notes && mkdir notes && echo new > notes/other.txt", timeout=30
        )
        snapshot = await sandbox.snapshot(index)
        assert snapshot.files == {"notes/other.txt": b"new\n"}
        assert snapshot.deleted == ["notes/readme.txt"]
        assert await Sandbox.snapshot(sandbox, index) == snapshot
    finally:
        await sandbox.kill()


async def test_a_file_only_touched_or_chmodded_back_is_no_change(backend: LocalBackend) -> None:
    index = await backend.template_index("tiny")
    sandbox = await backend.create("tiny", timeout=300)
    try:
        await sandbox.commands.run("touch index.html && chmod 644 notes/readme.txt", timeout=30)
        assert await sandbox.snapshot(index) == WorkspaceSnapshot()
    finally:
        await sandbox.kill()


async def test_a_link_planted_in_the_workspace_is_never_followed_on_the_host(
    backend: LocalBackend,
) -> None:
    index = await backend.template_index("tiny")
    sandbox = await backend.create("tiny", timeout=300)
    try:
        await sandbox.commands.run("ln -s /etc escape && ln -s /etc/shadow shadow", timeout=30)
        snapshot = await sandbox.snapshot(index)
        assert snapshot.files == {}
        assert snapshot.symlinks == {"escape": "/etc", "shadow": "/etc/shadow"}
    finally:
        await sandbox.kill()


@pytest.mark.slow
async def test_an_npm_install_comes_back_with_its_package(
    make_backend: Callable[..., LocalBackend],
) -> None:
    backend = make_backend(qai_sandbox_network=SandboxNetwork.REGISTRY, qai_sandbox_disk_mb=256)
    index = await backend.template_index("tiny")
    first: LocalSandbox = await backend.create("tiny", timeout=300)
    second = None
    try:
        await first.commands.run(
            "npm init -y >/dev/null && npm install is-number@7.0.0 --no-audit --no-fund",
            timeout=300,
        )
        snapshot = await first.snapshot(index)
        assert {"package.json", "package-lock.json"} <= set(snapshot.files)
        assert not any("node_modules" in path for path in snapshot.files)
        assert snapshot.needs_install()

        second = await backend.create("tiny", timeout=300)
        installed = await second.restore(snapshot)
        assert installed is not None and installed.exit_code == 0
        check = await second.commands.run(
            "node -e \"console.log(require('is-number')(5))\"", timeout=30
        )
        assert check.stdout.strip() == "true"
    finally:
        await first.kill()
        if second is not None:
            await second.kill()
