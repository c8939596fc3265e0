"""Storage verifies the bytes, not what a client said about them: on the real S3 server (moto) and
in a local folder, an object whose body was corrupted after it was written fails the read-back of
a put and every get, however intact its metadata looks."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobs.errors import RetryLater
from jobs.storage import LocalStorage, ObjectCorrupt, S3Storage
from tests.support.services import S3Server

DATA = b"RIFF" + bytes(range(256)) * 64


def s3_storage(s3: S3Server) -> S3Storage:
    return S3Storage(
        s3.bucket,
        prefix=f"t-{uuid.uuid4().hex[:8]}",
        endpoint_url=s3.endpoint,
        access_key_id="test",
        secret_access_key="test",
        retry_deadline_s=0.0,
    )


def rot(s3: S3Server, storage: S3Storage, key: str) -> None:
    """Replace the object's body behind the storage's back, keeping its sha256 metadata: what the
    old read-back compared, so only a check of the bytes themselves can notice."""
    s3.client().put_object(
        Bucket=s3.bucket,
        Key=storage._key(key),
        Body=DATA[:-1] + b"\x00",
        ContentType="audio/wav",
        Metadata={"sha256": hashlib.sha256(DATA).hexdigest()},
    )


def test_s3_put_sends_a_sha256_checksum_and_get_verifies_the_body(s3_server: S3Server) -> None:
    storage = s3_storage(s3_server)
    stored = storage.put("a/obj.wav", DATA, "audio/wav")
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=storage._key("a/obj.wav"), ChecksumMode="ENABLED")
    assert head.get("ChecksumSHA256")  # the server stored (and checked) the SHA-256 we sent
    assert storage.get("a/obj.wav") == DATA

    rot(s3_server, storage, "a/obj.wav")
    with pytest.raises(ObjectCorrupt, match="a/obj.wav"):
        storage.get("a/obj.wav")


def test_s3_put_read_back_hashes_the_stored_body(s3_server: S3Server) -> None:
    storage = s3_storage(s3_server)

    def corrupt_after_put(**kwargs: Any) -> None:
        rot(s3_server, storage, "b/obj.wav")

    # The object goes bad between the put and its read-back (a real write on the real server).
    storage.client.meta.events.register("after-call.s3.PutObject", corrupt_after_put)
    with pytest.raises(RetryLater) as refused:
        storage.put("b/obj.wav", DATA, "audio/wav")
    assert refused.value.code == "storage_mismatch"


def test_local_store_keeps_a_digest_beside_each_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    storage.put("c/obj.wav", DATA, "audio/wav")
    assert storage.get("c/obj.wav") == DATA
    assert storage.list("c/") == ["c/obj.wav"]  # the digest is no object

    path = tmp_path / "objects" / "c" / "obj.wav"
    path.write_bytes(DATA[:-1] + b"\x00")  # bit rot on disk
    with pytest.raises(ObjectCorrupt, match="c/obj.wav"):
        storage.get("c/obj.wav")

    storage.delete("c/obj.wav")
    assert list((tmp_path / "objects" / "c").iterdir()) == []
