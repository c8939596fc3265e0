"""Downloads with ``?redirect=true``: on S3 (moto's server) the API answers 307 to a presigned URL
that the S3 server itself serves, byte for byte the file the API would have sent; another tenant
gets 404, not a URL; on local storage there is no presigned URL and the file comes in the body.
Embedded mode on PostgreSQL (tasks inline, test engine), so the job is finished when submitted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from jobs.runtime import Runtime
from tests.support.speech import encode, speech_wav
from tests.support.front import api, assert_error, embedded_settings, new_key, new_tenant
from tests.support.services import S3Server


@pytest.fixture(scope="module")
def reference() -> bytes:
    samples, rate = speech_wav("The quick brown fox jumps over the lazy dog near the river bank.")
    return encode(samples, rate, "wav")


def tenant_key(runtime: Runtime) -> dict[str, str]:
    return new_key(runtime, new_tenant(runtime))


def finished_job(client: TestClient, headers: dict[str, str], reference: bytes) -> str:
    voice = client.post(
        "/v1/voices", files={"audio": ("me.wav", reference, "audio/wav")}, data={"language": "en"}, headers=headers
    )
    assert voice.status_code == 202 and voice.json()["status"] == "ready", voice.text
    response = client.post("/v1/jobs", json={"text": "A file to fetch.", "voice_id": voice.json()["id"]}, headers=headers)
    assert response.status_code == 202 and response.json()["status"] == "succeeded", response.text
    job_id: str = response.json()["id"]
    return job_id


def test_redirect_downloads_go_to_a_presigned_url_s3_serves(
    pg_url: str, s3_server: S3Server, tmp_path: Path, reference: bytes
) -> None:
    settings = embedded_settings(
        pg_url, tmp_path, storage="s3", s3_endpoint_url=s3_server.endpoint, s3_bucket=s3_server.bucket,
        s3_access_key_id="test", s3_secret_access_key="test", s3_presign_expiry_s=120,
    )  # fmt: skip
    with api(settings) as (client, runtime, _):
        alice, bob = tenant_key(runtime), tenant_key(runtime)
        job_id = finished_job(client, alice, reference)
        direct = client.get(f"/v1/jobs/{job_id}/audio", headers=alice)
        assert direct.status_code == 200 and len(direct.content) > 44
        for path in (f"/v1/jobs/{job_id}/audio", f"/v1/jobs/{job_id}/files/audio"):
            redirected = client.get(path, params={"redirect": "true"}, headers=alice, follow_redirects=False)
            assert redirected.status_code == 307, redirected.text
            location = redirected.headers["Location"]
            parts = urlsplit(location)
            assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint and s3_server.bucket in parts.path
            assert "Signature=" in parts.query  # SigV2 or SigV4, as the client is configured
            # Fetched with no credentials: the signature is the permission (moto does not check
            # signatures, so that is S3's promise, not this test's).
            fetched = httpx.get(location, timeout=30)
            assert fetched.status_code == 200 and fetched.content == direct.content
            # Another tenant gets no URL.
            other = client.get(path, params={"redirect": "true"}, headers=bob, follow_redirects=False)
            assert_error(other, 404, "job_not_found")


def test_redirect_on_local_storage_serves_the_file(pg_url: str, tmp_path: Path, reference: bytes) -> None:
    with api(embedded_settings(pg_url, tmp_path)) as (client, runtime, _):
        alice = tenant_key(runtime)
        job_id = finished_job(client, alice, reference)
        answer = client.get(f"/v1/jobs/{job_id}/audio", params={"redirect": "true"}, headers=alice, follow_redirects=False)
        assert answer.status_code == 200 and answer.content == client.get(f"/v1/jobs/{job_id}/audio", headers=alice).content
