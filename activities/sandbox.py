"""Sandbox lifecycle: get one (reusing the project's while it lives), hydrate it, keep it alive."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from temporalio import activity

from activities.errors import sandbox_failure
from activities.heartbeat import heartbeating
from activities.services import Services
from conversation import load_project_conversation_context
from sandboxes.base import SandboxError, SandboxNotFoundError, WriteEntry

PREVIEW_PORT = 3000


class AcquireSandboxInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    sandbox_id: str | None = None
    """The project's sandbox from an earlier run, reused while it is alive."""


class SandboxLease(BaseModel):
    sandbox_id: str
    url: str
    fresh: bool
    """True when a new sandbox was created (it then needs the latest fragment's files)."""


class HydrateSandboxInput(BaseModel):
    project_id: uuid.UUID
    run_id: uuid.UUID
    sandbox_id: str


class HydrateResult(BaseModel):
    files_written: int


class ExtendSandboxInput(BaseModel):
    project_id: uuid.UUID
    sandbox_id: str
    timeout_seconds: int | None = None


class SandboxActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="acquire_sandbox")
    async def acquire_sandbox(self, input: AcquireSandboxInput) -> SandboxLease:
        backend = self._services.sandboxes
        timeout = self._services.settings.qai_sandbox_timeout
        try:
            if input.sandbox_id:
                try:
                    sandbox = await backend.connect(input.sandbox_id, timeout=timeout)
                    if await sandbox.is_running():
                        return SandboxLease(
                            sandbox_id=sandbox.sandbox_id,
                            url=sandbox.preview_url(PREVIEW_PORT),
                            fresh=False,
                        )
                except SandboxNotFoundError:
                    activity.logger.info("sandbox expired; creating a new one")
            async with heartbeating():
                sandbox = await backend.create(
                    timeout=timeout,
                    metadata={"project_id": str(input.project_id), "run_id": str(input.run_id)},
                )
        except SandboxError as error:
            raise sandbox_failure(error, "starting the sandbox") from error
        return SandboxLease(
            sandbox_id=sandbox.sandbox_id, url=sandbox.preview_url(PREVIEW_PORT), fresh=True
        )

    @activity.defn(name="hydrate_sandbox")
    async def hydrate_sandbox(self, input: HydrateSandboxInput) -> HydrateResult:
        """Write the latest fragment's files into a new sandbox so the preview comes back."""
        async with self._services.db.session() as session:
            context = await load_project_conversation_context(session, input.project_id)
        fragment = context.latest_fragment
        if fragment is None or not fragment.files:
            return HydrateResult(files_written=0)
        entries = [WriteEntry(path=path, data=content) for path, content in fragment.files.items()]
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            await sandbox.files.write_files(entries)
        except SandboxError as error:
            raise sandbox_failure(error, "restoring the project's files") from error
        return HydrateResult(files_written=len(entries))

    @activity.defn(name="extend_sandbox")
    async def extend_sandbox(self, input: ExtendSandboxInput) -> None:
        """Keep the preview alive for a full timeout after a run hands it to the user."""
        timeout = input.timeout_seconds or self._services.settings.qai_sandbox_timeout
        try:
            sandbox = await self._services.sandboxes.connect(input.sandbox_id)
            await sandbox.set_timeout(timeout)
        except SandboxError as error:
            raise sandbox_failure(error, "extending the sandbox's lifetime") from error
