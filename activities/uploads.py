"""The message's images in the workspace: `public/uploads/<name>`, where the app serves them.

Written before the agent runs (and again into a sandbox that replaced a dead one), so "use
this logo in the header" finds the file; the run's snapshot then holds them like any other
file, for restore, download and later runs.
"""

from __future__ import annotations

from temporalio import activity

from activities.errors import sandbox_failure
from activities.heartbeat import heartbeating
from activities.services import Services
from contract import PlacedUploads, PlaceUploadsInput
from conversation.images import UPLOADS
from sandboxes.base import SandboxError, WriteEntry
from storage import images, snapshots


class UploadActivities:
    def __init__(self, services: Services) -> None:
        self._services = services

    @activity.defn(name="place_uploads")
    async def place_uploads(self, input: PlaceUploadsInput) -> PlacedUploads:
        """Write the images (idempotent: the same bytes to the same paths on a retry)."""
        db = self._services.db
        async with db.session() as session:
            attached = (await images.for_messages(session, [input.run_id])).get(input.run_id, [])
            entries = []
            for image in attached:
                row = await images.image_bytes(session, image.image_id)
                if row is None or not image.upload_name:
                    continue
                entries.append(WriteEntry(path=f"{UPLOADS}/{image.upload_name}", data=row.data))
            snapshotted = await snapshots.has_run_snapshot(session, input.run_id)
        if not entries:
            return PlacedUploads(paths=[])
        backend = self._services.sandboxes
        try:
            sandbox = await backend.connect(input.sandbox_id)
            async with heartbeating():
                await sandbox.files.write_files(entries)
                snapshot = None
                if not snapshotted:  # a later snapshot of this run already holds them
                    snapshot = await sandbox.snapshot(await backend.template_index())
        except SandboxError as error:
            raise sandbox_failure(error, "placing the images in the workspace") from error
        if snapshot is not None:
            async with db.session() as session:
                await snapshots.save(
                    session,
                    project_id=input.project_id,
                    run_id=input.run_id,
                    snapshot=snapshot,
                    tool_call_id=None,
                )
                await session.commit()
        return PlacedUploads(paths=[entry.path for entry in entries])
