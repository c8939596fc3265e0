"""Object storage: one small interface, two backends — a local folder (embedded mode) and any
S3-speaking endpoint through boto3 (AWS, MinIO, Ceph, R2; ``endpoint_url`` configurable).

Every check is of the bytes themselves, never of what a client said about them: a put returns
what was stored (size, sha256) only once the bytes read back hash to what was written, and every
get hashes what it read against the digest kept with the object (S3: the SHA-256 checksum the
server validated at the put and the ``sha256`` metadata; local folder: a digest file beside the
object). A body that does not match raises ``ObjectCorrupt``."""

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


class ObjectCorrupt(RetryLater):
    """The bytes read do not hash to the digest stored with the object. Not retried in-process
    (a body at rest will not heal); the stage's capped retries may fetch it again."""

    code = "storage_corrupt"


def _check_body(key: str, data: bytes, expected: str | None) -> None:
    if expected is not None and _sha256(data) != expected:
        raise ObjectCorrupt(
            f"stored object {key} is corrupt: its bytes hash to {_sha256(data)}, not {expected}",
            code="storage_corrupt",
        )


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


DIGEST_SUFFIX = ".sha256"


class LocalStorage:
    """A folder; writes are atomic (temp file + rename) so a crash never leaves half an object.
    Each object's sha256 is kept beside it in a hidden file (``.<name>.sha256``), written before
    the object so an object never exists without its digest; objects written before digests were
    kept have none and are read unchecked."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    @staticmethod
    def _digest_path(path: Path) -> Path:
        return path.with_name(f".{path.name}{DIGEST_SUFFIX}")

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
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

    def _stored_digest(self, path: Path) -> str | None:
        try:
            return self._digest_path(path).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _sha256(data)
        self._write_atomic(self._digest_path(path), digest.encode("ascii"))
        self._write_atomic(path, data)
        try:
            _check_body(key, path.read_bytes(), digest)  # the read-back: what the disk holds now
        except ObjectCorrupt as exc:
            raise RetryLater(str(exc), code="storage_mismatch") from exc
        return StoredObject(key, len(data), digest, content_type)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc
        _check_body(key, data, self._stored_digest(path))
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._digest_path(path).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file()
            and not p.name.startswith(".tmp-")
            and not (p.name.startswith(".") and p.name.endswith(DIGEST_SUFFIX))
            and str(p.relative_to(base)).startswith(prefix)
        )

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None


class S3Storage:
    """Objects in one bucket under an optional prefix. Transient errors become ``RetryLater``.

    Puts and gets are retried in-process with backoff for up to ``retry_deadline_s`` while the
    endpoint is unreachable or answers 5xx, so a short storage outage delays a stage instead of
    costing it an attempt. A put sends its SHA-256 as an S3 checksum (``ChecksumSHA256``: the
    server refuses a body that arrived damaged, and keeps the checksum with the object) and is
    read back with a GET whose bytes are hashed: it returns only once they match what was
    written. A get hashes its bytes too, against the stored checksum and ``sha256`` metadata."""

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
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()

        def once() -> StoredObject:
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ContentType=content_type,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                    Metadata={"sha256": digest},
                )
            except (BotoCoreError, ClientError) as exc:
                raise self._transient(exc, f"put of {key}") from exc
            try:
                self._read(key, expected=digest)
            except (ObjectCorrupt, ObjectNotFound) as exc:
                raise RetryLater(f"stored object {key} does not match what was written: {exc}", code="storage_mismatch") from exc
            return StoredObject(key, len(data), digest, content_type)

        return self._retrying(once, f"put of {key}")

    def _read(self, key: str, expected: str | None = None) -> bytes:
        """The object's bytes, hashed against ``expected`` (a put's read-back) and against the
        digests stored with it: the server's SHA-256 checksum and the ``sha256`` metadata."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
            body: bytes = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from exc
            raise self._transient(exc, f"get of {key}") from exc
        except BotoCoreError as exc:
            if type(exc).__name__ == "FlexibleChecksumError":  # botocore's own check of the body
                raise ObjectCorrupt(f"stored object {key} is corrupt: {exc}", code="storage_corrupt") from exc
            raise self._transient(exc, f"get of {key}") from exc
        _check_body(key, body, expected)
        _check_body(key, body, response.get("Metadata", {}).get("sha256"))
        server = response.get("ChecksumSHA256")
        if server and "-" not in server:  # "<b64>-<parts>": a multipart checksum of checksums
            _check_body(key, body, base64.b64decode(server).hex())
        return body

    def get(self, key: str) -> bytes:
        return self._retrying(lambda: self._read(key), f"get of {key}")

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
