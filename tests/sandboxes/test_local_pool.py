"""The warm pool: real bubblewrap sandboxes of the real Next.js template, warmed and handed out.

The tests share one data dir and run in order: each waits (with a deadline) for the pool state it
needs, so a warm sandbox one test leaves behind is reused by the next instead of warmed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import structlog

from runtime.settings import Settings
from sandboxes.local.backend import LocalBackend
from sandboxes.local.pool import PoolEntry, WarmPool
from sandboxes.local.templates import LocalTemplate, built_template

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

WARM_WAIT = 300.0


@pytest.fixture(scope="module")
def nextjs_template(local_sandboxes: None) -> LocalTemplate:
    """Built once into the project's data dir (cached) by `sandboxes.template.ensure_template`."""
    return built_template(Settings())


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pool-data")


@pytest.fixture(scope="module")
async def make_pool_backend(
    make_settings: Callable[..., Settings], nextjs_template: LocalTemplate, pool_dir: Path
) -> AsyncIterator[Callable[..., LocalBackend]]:
    """Backends over one data dir; every sandbox left in it is killed after the module."""

    def make(pool_size: int = 1) -> LocalBackend:
        settings = make_settings(
            qai_data_dir=pool_dir,
            qai_sandbox_pool_size=pool_size,
            qai_sandbox_memory_mb=3072,
            qai_sandbox_pids=1024,
            qai_sandbox_disk_mb=1024,
        )
        return LocalBackend(settings, templates={"nextjs": nextjs_template})

    yield make
    cleaner = make(pool_size=0)
    for sandbox_id in cleaner.list_ids():
        await cleaner.kill(sandbox_id)
    assert cleaner.list_ids() == []


def members(backend: LocalBackend) -> list[PoolEntry]:
    spec = backend.templates["nextjs"]
    return backend.pool.entries(spec)[0]


async def warm_member(backend: LocalBackend, other_than: set[str] | None = None) -> str:
    """The id of a warm pool sandbox (not one of `other_than`), once there is one."""
    deadline = time.monotonic() + WARM_WAIT
    while True:
        warm = [e.sandbox_id for e in members(backend) if e.warm]
        warm = [i for i in warm if i not in (other_than or set())]
        if warm:
            return warm[0]
        assert time.monotonic() < deadline, "the pool never held a warm sandbox"
        await asyncio.sleep(0.1)


async def test_pool_hands_out_a_warm_sandbox_and_refills(
    make_pool_backend: Callable[..., LocalBackend],
) -> None:
    backend = make_pool_backend()
    await backend.start()
    try:
        pooled = await warm_member(backend)
        sandbox = await backend.create(timeout=600, metadata={"project_id": "p-1"})
        assert sandbox.sandbox_id == pooled
        assert sandbox.metadata["project_id"] == "p-1"
        assert not (backend.root / pooled / "pooled").exists()
        expires = sandbox._state["expires_at"]
        assert time.time() + 500 < expires <= time.time() + 600
        # Compiled before anyone but the pool asked for it: turbopack's output of `/` is there.
        compiled = await sandbox.commands.run("ls .next/server/app")
        assert "page" in compiled.stdout
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.get(sandbox.preview_url(3000))
        assert response.status_code == 200
        assert "<html" in response.text
        refilled = await warm_member(backend, other_than={pooled})
        assert refilled != pooled
        assert [e.sandbox_id for e in members(backend)] == [refilled]
    finally:
        await backend.close()
    await sandbox.kill()


async def test_pool_size_zero_starts_nothing_and_claims_nothing(
    make_pool_backend: Callable[..., LocalBackend],
) -> None:
    pooled = await warm_member(make_pool_backend())  # left by the test before
    before = set(make_pool_backend().list_ids())
    backend = make_pool_backend(pool_size=0)
    await backend.start()
    try:
        assert not backend.pool.running
        assert set(backend.list_ids()) == before
        sandbox = await backend.create(timeout=120)
        assert sandbox.sandbox_id != pooled
        assert (backend.root / pooled / "pooled").exists()
    finally:
        await backend.close()
    await sandbox.kill()


async def test_concurrent_creates_never_share_a_pool_sandbox(
    make_pool_backend: Callable[..., LocalBackend],
) -> None:
    pooled = await warm_member(make_pool_backend())
    first, second = make_pool_backend(), make_pool_backend()  # not started: they only claim
    sandboxes = await asyncio.gather(
        first.create(timeout=120), second.create(timeout=120), return_exceptions=True
    )
    try:
        ids = [s.sandbox_id for s in sandboxes if not isinstance(s, BaseException)]
        assert len(ids) == 2, sandboxes
        assert ids.count(pooled) == 1
        assert len(set(ids)) == 2
    finally:
        for sandbox in sandboxes:
            if not isinstance(sandbox, BaseException):
                await sandbox.kill()


async def test_a_closed_backend_leaves_the_pool_to_the_next_one(
    make_pool_backend: Callable[..., LocalBackend],
) -> None:
    backend = make_pool_backend()
    await backend.start()
    pooled = await warm_member(backend)
    await backend.close()
    assert not backend.pool.running
    entry = next(e for e in members(backend) if e.sandbox_id == pooled)
    assert entry.warm
    restarted = make_pool_backend()
    await restarted.start()
    try:
        deadline = time.monotonic() + 60
        while restarted.pool.rounds == 0:  # a full round: it found the pool full
            assert time.monotonic() < deadline, "the restarted pool never finished a round"
            await asyncio.sleep(0.05)
        assert [e.sandbox_id for e in members(restarted)] == [pooled]
    finally:
        await restarted.close()
    sandbox = await restarted.create(timeout=120)
    try:
        assert sandbox.sandbox_id == pooled
        assert await sandbox.is_running()
    finally:
        await sandbox.kill()


async def test_refill_failures_are_logged_and_retried(
    make_pool_backend: Callable[..., LocalBackend],
) -> None:
    backend = make_pool_backend()
    backend.pool = WarmPool(backend, 1, template="no-such-template")
    with structlog.testing.capture_logs() as logs:
        await backend.start()
        try:
            deadline = time.monotonic() + 30
            while len([e for e in logs if e["event"] == "sandbox pool refill failed"]) < 2:
                assert backend.pool.running, "the refill task died"
                assert time.monotonic() < deadline, "no retry after a failed refill"
                await asyncio.sleep(0.05)
        finally:
            await backend.close()
    failures = [e for e in logs if e["event"] == "sandbox pool refill failed"]
    assert "no-such-template" in failures[0]["reason"]
    assert failures[0]["retry_in"] < failures[1]["retry_in"]
