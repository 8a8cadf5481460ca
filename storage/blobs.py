"""One small blob store for build outputs: put, get, delete and list by key.

Two implementations behind the same interface:
- `FileBlobs`, the embedded default: files under `QAI_DATA_DIR/blobs`. Chosen over PostgreSQL
  large objects because the gateway serves these bytes on every visit: a file read costs no
  database connection (the pool stays free for the API and workers), the OS page cache keeps
  hot assets in memory, and `pg_dump`/vacuum are not burdened with megabytes of build output.
  Large objects would also need their own cleanup (`lo_unlink`), which cascades never do.
- `S3Blobs`: any S3-compatible service (MinIO in compose, AWS S3), for deployments where
  workers and gateways run on several hosts. boto3's own retries are off: the caller (an
  activity, or a visitor's reload) retries.

Keys are relative, `/`-separated paths such as `builds/<id>/index.html`.
"""

from __future__ import annotations

import abc
import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.settings import BlobStoreName, Settings

if TYPE_CHECKING:
    from collections.abc import Iterable

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-@+%~]+)*$")


class BlobError(RuntimeError):
    """The blob store could not be reached or refused the request."""


def check_key(key: str) -> str:
    """A relative key with no empty, `.` or `..` segment (so no file escapes the store)."""
    if not KEY_PATTERN.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there (idempotent)."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None when there are none."""

    @abc.abstractmethod
    async def delete(self, keys: Iterable[str]) -> None:
        """Remove these keys; missing ones are ignored."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""

    async def delete_prefix(self, prefix: str) -> int:
        keys = await self.list(prefix)
        await self.delete(keys)
        return len(keys)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class FileBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside then renamed: a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, data)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Prune the emptied directories up to the root.
            parent = path.parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    async def delete(self, keys: Iterable[str]) -> None:
        await asyncio.to_thread(self._delete, list(keys))

    def _list(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return []
        found = []
        for path in start.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)


class S3Blobs(BlobStore):
    """An S3 bucket through boto3 (in threads), its retries off; the bucket is made if missing."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                s3={"addressing_style": "path"},
            ),
        )
        self._bucket_ready = False

    async def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}:
                return None
            raise BlobError(f"S3 {method} failed: {code or error}") from error
        except BotoCoreError as error:
            raise BlobError(f"S3 {method} failed: {error}") from error

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except ClientError:
            await self._call("create_bucket", Bucket=self.bucket)
        self._bucket_ready = True

    async def put(self, key: str, data: bytes) -> None:
        await self._ensure_bucket()
        await self._call("put_object", Bucket=self.bucket, Key=check_key(key), Body=data)

    async def get(self, key: str) -> bytes | None:
        reply = await self._call("get_object", Bucket=self.bucket, Key=check_key(key))
        if reply is None:
            return None
        return await asyncio.to_thread(reply["Body"].read)

    async def delete(self, keys: Iterable[str]) -> None:
        batch = [{"Key": check_key(key)} for key in keys]
        for start in range(0, len(batch), 1000):  # S3's limit per request
            await self._call(
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": batch[start : start + 1000], "Quiet": True},
            )

    async def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            reply = await self._call("list_objects_v2", **kwargs)
            if reply is None:  # no bucket yet: nothing stored
                return []
            keys += [item["Key"] for item in reply.get("Contents", [])]
            if not reply.get("IsTruncated"):
                return sorted(keys)
            token = reply.get("NextContinuationToken")

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def open_blobs(settings: Settings) -> BlobStore:
    """The blob store the settings name."""
    if settings.qai_blob_store == BlobStoreName.S3:
        secret = settings.qai_s3_secret_access_key
        return S3Blobs(
            bucket=settings.qai_s3_bucket,
            endpoint_url=settings.qai_s3_endpoint_url,
            region=settings.qai_s3_region,
            access_key_id=settings.qai_s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )
    return FileBlobs(settings.data_dir / "blobs")
