"""Publishing a version: a production build in a throwaway sandbox, stored as blobs.

The build sandbox gets the version's workspace (never the project's preview sandbox, which a run
may be using), stops its dev server, and runs `next build` with `QAI_NEXT_OUTPUT=export` (the
template's next.config reads it): a static export the gateway serves straight from the blob
store. The sandbox is killed whatever happens. A build error becomes a failed publication whose
error is the build log's relevant lines; the earlier live publication keeps being served.

Static export first: an app that needs a server (a route handler, cookies, dynamic rendering)
fails the export with Next.js's own "output: export" message, and the publish then says so
(server mode, a standalone server in a sandbox, is not available yet).
"""

from __future__ import annotations

import io
import re
import tarfile
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import sandbox_failure
from activities.heartbeat import heartbeating
from activities.sandbox_service import SandboxService
from activities.services import Services
from contract import (
    PublishFailureInput,
    PublishInput,
    PublishResult,
    StoreErrorType,
    Unpublished,
    UnpublishInput,
)
from runtime import metrics
from sandboxes.base import HOME, CommandFailedError, Sandbox, SandboxError
from sandboxes.snapshot import WorkspaceSnapshot
from storage import publications, versions
from storage.blobs import BlobStore, open_blobs
from storage.publications import PublicationMode

STOP_DEV_SERVER = "pkill -f '[n]ext dev'; sleep 0.5; true"
"""The build sandbox's dev server would share `.next` with the build. (`[n]` keeps the pattern
from matching this very command's shell.)"""
BUILD_COMMAND = "npx next build"
ARCHIVE = ".qai-publish.tgz"
PACK_COMMAND = f"rm -f {ARCHIVE} && tar -czf {ARCHIVE} -C out ."
MAX_ERROR_CHARS = 2000
SERVER_FEATURE_MARKERS = ("output: export", "output: 'export'", 'output: "export"')
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ERROR_LINE = re.compile(
    r"(error|failed|cannot|can't|unexpected|not found|missing|type |\^)", re.IGNORECASE
)


def blob_store(services: Services) -> BlobStore:
    return services.blobs or open_blobs(services.settings)


def relevant_lines(log: str, limit: int = MAX_ERROR_CHARS) -> str:
    """The build log's error lines and what follows them, colour codes and sandbox paths gone."""
    lines = [
        ANSI.sub("", line).replace(f"{HOME}/", "").replace(HOME, ".") for line in log.splitlines()
    ]
    lines = [line.rstrip() for line in lines if line.strip()]
    picked: list[str] = []
    keep_after = 0
    for line in lines:
        if ERROR_LINE.search(line):
            keep_after = 4
        if keep_after > 0:
            picked.append(line)
            keep_after -= 1
    text = "\n".join(picked or lines[-20:])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def needs_server(log: str) -> bool:
    return any(marker in log for marker in SERVER_FEATURE_MARKERS)


def unpack(archive: bytes) -> dict[str, bytes]:
    """The exported files by relative path; links, devices and source maps are dropped."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            if not member.isfile() or not name or name.endswith(".map"):
                continue
            if name.startswith("/") or ".." in name.split("/"):
                continue
            extracted = tar.extractfile(member)
            if extracted is not None:
                files[name] = extracted.read()
    return files


class BuildFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PublishActivities:
    def __init__(self, services: Services, sandboxes: SandboxService) -> None:
        self._services = services
        self._sandboxes = sandboxes

    @activity.defn(name="publish_version")
    async def publish_version(self, input: PublishInput) -> PublishResult:
        """Idempotent: a retry finds its row and its sandbox, and stores the same blobs again."""
        settings = self._services.settings
        async with self._services.db.session() as session:
            fragment = await versions.get_fragment(session, input.fragment_id)
            if (
                fragment is None
                or await versions.fragment_project(session, fragment) != input.project_id
            ):
                raise ApplicationError(
                    "That version is not one of this project's.",
                    type=StoreErrorType.UNKNOWN_FRAGMENT,
                    non_retryable=True,
                )
            row = await publications.start_building(
                session,
                publication_id=input.publication_id,
                project_id=input.project_id,
                fragment_id=input.fragment_id,
            )
            if row.status == publications.PublicationStatus.LIVE:
                return PublishResult(live=True, mode=row.mode, files=row.files)
            workspace = await versions.fragment_workspace(session, fragment)
        started = time.monotonic()
        try:
            sandbox, _ = await self._sandboxes.obtain(
                input.project_id, None, {"publication_id": str(input.publication_id)}
            )
        except SandboxError as error:
            raise sandbox_failure(error, "starting the build sandbox") from error
        try:
            async with heartbeating():
                files = await self._build(sandbox, workspace, settings.qai_build_timeout)
        except BuildFailed as failed:
            async with self._services.db.session() as session:
                await publications.fail(session, input.publication_id, failed.message)
            metrics.PUBLISHES.labels("failed").inc()
            return PublishResult(live=False, error=failed.message)
        except SandboxError as error:
            raise sandbox_failure(error, "building the app") from error
        finally:
            try:
                await sandbox.kill()
            except SandboxError as error:  # it expires on its own
                activity.logger.warning("build sandbox not stopped: %s", error)
        blobs = blob_store(self._services)
        prefix = publications.blob_prefix(input.project_id, input.publication_id)
        async with heartbeating():
            for path, data in sorted(files.items()):
                await blobs.put(prefix + path, data)
        seconds = time.monotonic() - started
        async with self._services.db.session() as session:
            old = await publications.go_live(
                session,
                publication_id=input.publication_id,
                project_id=input.project_id,
                mode=PublicationMode.STATIC,
                files=len(files),
                size=sum(len(data) for data in files.values()),
                build_seconds=seconds,
                keep=settings.qai_publish_keep,
            )
        for publication_id in old:
            await blobs.delete_prefix(publications.blob_prefix(input.project_id, publication_id))
        metrics.PUBLISHES.labels("live").inc()
        metrics.PUBLISH_BUILD_SECONDS.observe(seconds)
        await self._count_published()
        return PublishResult(live=True, mode=PublicationMode.STATIC, files=len(files))

    async def _build(
        self, sandbox: Sandbox, workspace: WorkspaceSnapshot, limit: int
    ) -> dict[str, bytes]:
        try:
            await sandbox.restore(workspace)
        except CommandFailedError as failed:
            raise BuildFailed(
                "Installing the app's dependencies failed:\n"
                + relevant_lines(failed.stderr or failed.stdout)
            ) from None
        await sandbox.commands.run(STOP_DEV_SERVER, cwd=HOME, timeout=30)
        try:
            await sandbox.commands.run(
                BUILD_COMMAND,
                cwd=HOME,
                envs={"QAI_NEXT_OUTPUT": "export", "NODE_ENV": "production"},
                timeout=limit,
            )
        except CommandFailedError as failed:
            log = f"{failed.stdout}\n{failed.stderr}"
            if needs_server(log):
                raise BuildFailed(
                    "This app uses server features (a route handler, cookies, headers or "
                    "dynamic rendering), so it cannot be exported as a static site, and "
                    "publishing server apps is not available yet:\n" + relevant_lines(log)
                ) from None
            raise BuildFailed("The production build failed:\n" + relevant_lines(log)) from None
        if not await sandbox.files.exists(f"{HOME}/out/index.html"):
            raise BuildFailed(
                "The build produced no static export (out/index.html): the app's next.config "
                "must keep `output: process.env.QAI_NEXT_OUTPUT`."
            )
        await sandbox.commands.run(PACK_COMMAND, cwd=HOME, timeout=120)
        archive = await sandbox.files.read(f"{HOME}/{ARCHIVE}", format="bytes")
        return unpack(archive)

    async def _count_published(self) -> None:
        """The published-apps gauge, from every project's rows (the same on every worker)."""
        async with self._services.db.session() as session:
            counts = await publications.count_live_by_mode(session)
        for mode in PublicationMode:
            metrics.PUBLISHED_APPS.labels(mode.value).set(counts.get(mode.value, 0))

    @activity.defn(name="fail_publication")
    async def fail_publication(self, input: PublishFailureInput) -> None:
        """The publish could not finish (its retries ran out): the row says so."""
        async with self._services.db.session() as session:
            await publications.fail(session, input.publication_id, input.error)
        metrics.PUBLISHES.labels("failed").inc()

    @activity.defn(name="unpublish")
    async def unpublish(self, input: UnpublishInput) -> Unpublished:
        """Rows first (the URL answers 404 at once), then their blobs; a retry finishes the job."""
        async with self._services.db.session() as session:
            removed = await publications.remove_all(session, input.project_id)
        await blob_store(self._services).delete_prefix(
            publications.project_prefix(input.project_id)
        )
        await self._count_published()
        return Unpublished(builds_removed=len(removed))
