"""Object storage: one small interface, two backends — a local folder (embedded mode) and any
S3-speaking endpoint through boto3 (AWS, MinIO, Ceph, R2; ``endpoint_url`` configurable).
A put returns what was stored (size, sha256) only after the backend confirms it."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from jobs.errors import RetryLater

if TYPE_CHECKING:
    from jobs.settings import Settings

_T = TypeVar("_T")


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256: str
    content_type: str


class ObjectNotFound(KeyError):
    """The key names no object."""


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL a client can download from directly, or None when the backend has none."""
        ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStorage:
    """A folder; writes are atomic (temp file + rename) so a crash never leaves half an object."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredObject(key, len(data), _sha256(data), content_type)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-") and str(p.relative_to(base)).startswith(prefix)
        )

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None


class S3Storage:
    """Objects in one bucket under an optional prefix. Transient errors become ``RetryLater``.

    Puts and gets are retried in-process with backoff for up to ``retry_deadline_s`` while the
    endpoint is unreachable or answers 5xx, so a short storage outage delays a stage instead of
    costing it an attempt. A put sends Content-MD5 (the server refuses a body that arrived
    damaged) and is read back with a HEAD: it returns only once the stored size and checksum
    match what was written."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        retry_deadline_s: float = 0.0,
        retry_backoff_s: float = 0.5,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.retry_deadline_s = retry_deadline_s
        self.retry_backoff_s = retry_backoff_s
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _transient(self, exc: Exception, what: str) -> RetryLater:
        return RetryLater(f"object storage {what} failed: {exc}", code=_outage_code(exc))

    def _retrying(self, work: Callable[[], _T], what: str) -> _T:
        from jobs.retrying import with_backoff

        return with_backoff(
            work,
            lambda exc: isinstance(exc, RetryLater) and exc.code in RETRIED_CODES,
            deadline_s=self.retry_deadline_s,
            base_s=self.retry_backoff_s,
            cap_s=max(self.retry_backoff_s, 5.0),
            what=f"object storage {what}",
        )

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        digest = _sha256(data)
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()

        def once() -> StoredObject:
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ContentType=content_type,
                    ContentMD5=md5,
                    Metadata={"sha256": digest},
                )
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except (BotoCoreError, ClientError) as exc:
                raise self._transient(exc, f"put of {key}") from exc
            if int(head["ContentLength"]) != len(data) or head.get("Metadata", {}).get("sha256") != digest:
                raise RetryLater(f"stored object {key} does not match what was written", code="storage_mismatch")
            return StoredObject(key, len(data), digest, content_type)

        return self._retrying(once, f"put of {key}")

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        def once() -> bytes:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                body: bytes = response["Body"].read()
                return body
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise ObjectNotFound(key) from exc
                raise self._transient(exc, f"get of {key}") from exc
            except BotoCoreError as exc:
                raise self._transient(exc, f"get of {key}") from exc

        return self._retrying(once, f"get of {key}")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._transient(exc, f"head of {key}") from exc
        except BotoCoreError as exc:
            raise self._transient(exc, f"head of {key}") from exc

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as exc:
            raise self._transient(exc, f"delete of {key}") from exc

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_s
        )
        return url

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (``voxmill storage init``, tests)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)


def _outage_code(exc: Exception) -> str:
    """``storage_unavailable`` when the endpoint is unreachable, slow or answers 5xx (worth
    waiting for), ``storage_error`` for a refusal (access denied, no such bucket)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status < 500 and error.get("Code") not in ("SlowDown", "RequestTimeout", "BadDigest", "Throttling"):
            return "storage_error"
    return "storage_unavailable"


# What the in-process retry waits out; a refusal goes straight back to the stage.
RETRIED_CODES = frozenset({"storage_unavailable", "storage_mismatch"})


def create_storage(settings: "Settings") -> Storage:
    if settings.storage == "s3":
        return S3Storage(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            retry_deadline_s=settings.storage_retry_deadline_s,
            retry_backoff_s=settings.storage_retry_backoff_s,
        )
    assert settings.storage_dir is not None
    return LocalStorage(settings.storage_dir)
