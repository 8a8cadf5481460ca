"""Fixtures for the local sandbox backend: real bubblewrap, overlayfs and cgroups (needs root).

Preview tests use the real Next.js template when `sandboxes.template` can build it; every other test
uses a tiny template (a Python static server on port 3000) so it stays fast.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from runtime.settings import SandboxNetwork, Settings
from sandboxes.local.backend import LocalBackend
from sandboxes.local.layout import HOST_SANDBOX_GID, HOST_SANDBOX_UID
from sandboxes.local.sandbox import LocalSandbox
from sandboxes.local.templates import LocalTemplate

TINY_START = "exec python3 -m http.server 3000 --bind 127.0.0.1"


@pytest.fixture(scope="session")
def local_sandboxes() -> None:
    """Skips tests of the local backend where it cannot run (it needs root and bubblewrap)."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip(
            "the local sandbox backend needs root and bubblewrap (apt-get install bubblewrap)"
        )


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory: pytest.TempPathFactory, local_sandboxes: None) -> LocalTemplate:
    """A template whose files are the sandbox user's (uid 1000 inside, 201000 on the host),
    like the real one."""
    directory = tmp_path_factory.mktemp("tiny-template")
    (directory / "index.html").write_text("<h1>tiny template</h1>\n")
    (directory / "notes").mkdir()
    (directory / "notes" / "readme.txt").write_text("from the template\n")
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, HOST_SANDBOX_UID, HOST_SANDBOX_GID)
    return LocalTemplate(name="tiny", directory=directory, start_cmd=TINY_START, port=3000)


@pytest.fixture(scope="session")
def make_settings(
    tmp_path_factory: pytest.TempPathFactory, local_sandboxes: None
) -> Callable[..., Settings]:
    data_dir = tmp_path_factory.mktemp("qai-data")

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "qai_data_dir": data_dir,
            "qai_sandbox_memory_mb": 512,
            "qai_sandbox_pids": 128,
            "qai_sandbox_disk_mb": 64,
            "qai_sandbox_network": SandboxNetwork.NONE,
            "qai_sandbox_pool_size": 0,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def make_backend(
    make_settings: Callable[..., Settings], tiny_template: LocalTemplate
) -> Callable[..., LocalBackend]:
    def make(**overrides: object) -> LocalBackend:
        return LocalBackend(make_settings(**overrides), templates={"tiny": tiny_template})

    return make


@pytest.fixture(scope="session")
def backend(make_backend: Callable[..., LocalBackend]) -> LocalBackend:
    """Network `none`, 64 MiB disk, 128 processes, 512 MiB memory."""
    return make_backend()


@pytest.fixture
async def sandbox(backend: LocalBackend) -> AsyncIterator[LocalSandbox]:
    sbx = await backend.create("tiny", timeout=300)
    try:
        yield sbx
    finally:
        await sbx.kill()


def _host_processes_matching(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def host_pids_matching() -> Callable[[str], list[int]]:
    """Host pids whose command line contains a marker (to prove nothing was left running)."""
    return _host_processes_matching
