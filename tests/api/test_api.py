"""The HTTP API in-process (embedded mode: SQLite, a local folder, tasks run inline with the
test engine): every error is JSON with a stable code, and a rejected request stores nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api_min.app import create_app
from db.migrate import upgrade
from db.models import Job, Voice
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support.speech import encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    # The test engine's tones would fail any real quality threshold: no scoring here (the gate
    # has its own tests, on real speech).
    settings = Settings(
        mode="embedded", home=tmp_path, engine="tests.support.engine", max_text_chars=2000, quality_gate="off"
    )
    upgrade(settings.db_url)
    runtime = Runtime(settings)
    runtime.celery
    yield runtime
    runtime.close()


@pytest.fixture()
def client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime=runtime))


@pytest.fixture()
def voice_id(client: TestClient) -> str:
    samples, rate = speech_wav(REFERENCE_TEXT)
    response = client.post(
        "/v1/voices",
        files={"audio": ("ref.mp3", encode(samples, rate, "wav"), "audio/mpeg")},
        data={"language": "en", "transcript": REFERENCE_TEXT},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "ready"  # embedded: processed inline
    assert body["analysis"]["reference_mode"] == "prompted"
    return str(body["id"])


def assert_error(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body


def count(runtime: Runtime, model: type) -> int:
    with runtime.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_job_round_trip(client: TestClient, voice_id: str) -> None:
    response = client.post("/v1/jobs", json={"text": "Hello there. How are you today?", "voice_id": voice_id})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["progress"]["fraction"] == 1.0
    audio = client.get(f"/v1/jobs/{body['id']}/audio")
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert client.get(f"/v1/jobs/{body['id']}").json()["audio_url"] == f"/v1/jobs/{body['id']}/audio"
    assert_error(client.post(f"/v1/jobs/{body['id']}/cancel"), 409, "job_already_finished")


def test_errors_are_json_with_stable_codes(client: TestClient, runtime: Runtime, voice_id: str) -> None:
    jobs_before = count(runtime, Job)
    assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}"), 404, "job_not_found")
    assert_error(client.get("/v1/jobs/not-a-uuid"), 422, "invalid_request")
    assert_error(client.get(f"/v1/voices/{uuid.uuid4()}"), 404, "voice_not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.delete("/v1/jobs"), 405, "method_not_allowed")
    assert_error(client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "invalid_request")
    assert_error(client.post("/v1/jobs", json={"voice_id": voice_id}), 422, "invalid_request")
    assert_error(client.post("/v1/jobs", json={"text": "x", "voice_id": voice_id, "format": "aiff"}), 422, "invalid_request")
    assert_error(
        client.post("/v1/jobs", json={"text": "x", "voice_id": voice_id, "params": {"top_k": 0}}), 422, "invalid_request"
    )
    assert_error(client.post("/v1/jobs", json={"text": "x", "voice_id": voice_id, "surprise": 1}), 422, "invalid_request")
    assert_error(client.post("/v1/jobs", json={"text": "x" * 2001, "voice_id": voice_id}), 413, "text_too_long")
    assert_error(client.post("/v1/jobs", json={"text": "   ", "voice_id": voice_id}), 422, "empty_text")
    assert_error(client.post("/v1/jobs", json={"text": "x", "voice_id": str(uuid.uuid4())}), 404, "voice_not_found")
    assert count(runtime, Job) == jobs_before


def test_bad_uploads_store_nothing(client: TestClient, runtime: Runtime) -> None:
    voices_before = count(runtime, Voice)
    objects_before = runtime.storage.list("")
    assert_error(client.post("/v1/voices", files={"audio": ("a.wav", b"", "audio/wav")}), 422, "empty_file")
    assert_error(
        client.post("/v1/voices", files={"audio": ("a.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")}),
        415,
        "unsupported_audio_format",
    )
    assert_error(client.post("/v1/voices", data={"language": "en"}), 422, "invalid_request")
    samples, rate = speech_wav(REFERENCE_TEXT)
    good = encode(samples, rate, "wav")
    assert_error(
        client.post("/v1/voices", files={"audio": ("a.wav", good, "audio/wav")}, data={"language": "fr"}),
        422,
        "unsupported_language",
    )
    assert count(runtime, Voice) == voices_before
    assert runtime.storage.list("") == objects_before


def test_idempotency_key(client: TestClient, voice_id: str) -> None:
    body = {"text": "Same request.", "voice_id": voice_id}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/v1/jobs", json={**body, "text": "Different."}, headers={"Idempotency-Key": "abc"})
    assert_error(other, 409, "idempotency_key_reused")


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "embedded"}
    assert client.get("/docs").status_code == 200
    assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]
