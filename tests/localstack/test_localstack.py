"""The local stack: starts healthy, refuses a second copy or a taken port, leaves no orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from localstack import AlreadyRunningError, LocalStack, LocalStackError, PortInUseError
from runtime.processes import PidLock, free_port
from runtime.settings import Settings
from runtime.temporal import TemporalConnectionError, connect_temporal, ensure_search_attributes
from storage.migrate import current_revision, head_revision

ROOT = Path(__file__).resolve().parents[2]


def _settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": None,
        "qai_data_dir": data_dir,
        "temporal_address": f"127.0.0.1:{free_port()}",
        "qai_temporal_ui_port": free_port(),
        "temporal_namespace": "qai-test",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _running(pids: Iterator[int] | list[int]) -> list[int]:
    """Those of `pids`, or members of their process groups, still running (zombies excluded)."""
    groups = set(pids)
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if (
            fields
            and fields[0] not in {"Z", "X"}
            and (int(entry.name) in groups or int(fields[2]) in groups)
        ):
            alive.append(int(entry.name))
    return alive


async def _wait_gone(pids: list[int], limit: float = 30.0) -> list[int]:
    """Wait (on pidfds, no polling) until the processes exit; return those still running."""
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        exited = asyncio.Event()
        loop.add_reader(pidfd, exited.set)
        try:
            await asyncio.wait_for(exited.wait(), limit)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    return _running(pids)


@pytest.mark.slow
async def test_stack_starts_everything_and_stops_it(embedded_data_dir: Path) -> None:
    settings = _settings(embedded_data_dir)
    ready = asyncio.Event()
    pids: list[int] = []

    async def run() -> None:
        async with LocalStack(settings) as stack:
            assert stack.temporal_address == settings.temporal_address
            assert stack.ui_url == f"http://127.0.0.1:{settings.qai_temporal_ui_port}"
            assert await current_revision(stack.database_url) == head_revision()
            client = await connect_temporal(stack.temporal_address, "qai-test")
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace="qai-test")
            )
            assert "QaiProjectId" in listed.custom_attributes
            assert (embedded_data_dir / "temporal" / "dev.db").exists()
            pids.extend(stack.pids)
            assert len(pids) == 2

            with pytest.raises(AlreadyRunningError) as second:
                await LocalStack(settings).start()
            assert str(second.value) == f"another `worker.py --dev` is running (pid {os.getpid()})"
            assert set(pids) <= set(_running(pids))  # the refused start stopped nothing
            ready.set()
            await asyncio.Event().wait()  # until cancelled, as worker.py does on SIGTERM

    task = asyncio.create_task(run())
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # surface the failure
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _running(pids) == []
    # The lock went with it.
    lock = PidLock(embedded_data_dir / "worker-dev.lock")
    lock.acquire()
    lock.release()


@pytest.mark.slow
async def test_stack_with_database_url_starts_no_postgres(
    embedded_data_dir: Path, database_url: str
) -> None:
    async with LocalStack(_settings(embedded_data_dir, database_url=database_url)) as stack:
        assert stack.database_url == database_url
        assert len(stack.pids) == 1  # only Temporal
    assert not (embedded_data_dir / "postgres").exists()


@pytest.mark.parametrize("which", ["TEMPORAL_ADDRESS", "QAI_TEMPORAL_UI_PORT"])
async def test_taken_port_is_named_with_its_setting(embedded_data_dir: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        overrides: dict[str, object] = (
            {"temporal_address": f"localhost:{port}"}
            if which == "TEMPORAL_ADDRESS"
            else {"qai_temporal_ui_port": port}
        )
        stack = LocalStack(_settings(embedded_data_dir, **overrides))
        with pytest.raises(PortInUseError) as caught:
            await stack.start()
    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is already in use; free it or change {which}"
    )
    assert stack.pids == []
    assert not (embedded_data_dir / "postgres").exists()  # failed before starting anything


async def test_remote_temporal_address_is_refused(embedded_data_dir: Path) -> None:
    with pytest.raises(LocalStackError, match="TEMPORAL_ADDRESS must be localhost:PORT"):
        await LocalStack(
            _settings(embedded_data_dir, temporal_address="temporal.example.com:7233")
        ).start()


@pytest.mark.slow
async def test_killed_owner_leaves_no_orphans(embedded_data_dir: Path) -> None:
    """Even SIGKILL of the owning process (no cleanup code runs) takes its servers down."""
    settings = _settings(embedded_data_dir)
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from localstack import LocalStack
        from runtime.settings import Settings

        async def main():
            settings = Settings.model_validate_json(sys.argv[1])
            async with LocalStack(settings) as stack:
                print("PIDS", json.dumps(stack.pids), flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        settings.model_dump_json(),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "QAI_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        pids: list[int] = []
        while not pids:
            line = await asyncio.wait_for(owner.stdout.readline(), 120)
            if not line:
                _, stderr = await owner.communicate()
                pytest.fail(f"stack did not start: {stderr.decode()[-2000:]}")
            if line.startswith(b"PIDS "):
                pids = json.loads(line.removeprefix(b"PIDS "))
        assert len(pids) == 2 and len(_running(pids)) >= 2
    finally:
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
    assert await _wait_gone(pids) == []


async def test_temporal_dev_server_fixture(temporal_dev_server: str) -> None:
    client = await connect_temporal(temporal_dev_server)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert listed.custom_attributes["QaiProjectId"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD


async def test_ensure_search_attributes(temporal_dev_server: str) -> None:
    client = await connect_temporal(temporal_dev_server)
    await ensure_search_attributes(client)  # already there: nothing to do
    await ensure_search_attributes(client, {"QaiTestMarker": "Keyword"})
    await ensure_search_attributes(client, {"QaiTestMarker": "Keyword"})  # idempotent
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    assert listed.custom_attributes["QaiTestMarker"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    with pytest.raises(TemporalConnectionError, match=r"QaiProjectId exists .* but qai needs Int"):
        await ensure_search_attributes(client, {"QaiProjectId": "Int"})
