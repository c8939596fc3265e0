"""The synchronous endpoints in-process (embedded mode: SQLite, a local folder, stages inline in a
thread of their own, the deterministic test engine): the answer is the job's own segments as the
post stage stored them, in every streamable format, and errors carry their codes."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api_min.app import create_app
from db.migrate import upgrade
from db.models import Job, Segment, StateTransition
from jobs.runtime import Runtime
from jobs.settings import Settings
from api_min.streaming import StreamInterrupted
from tests.support.services import wait_for
from tests.support.speech import encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
# Two segments with the sync default split (a segment closes once past ~50 characters).
TEXT = (
    "The first sentence is short. The second one is a little longer than the first. "
    "And a third! Then one more sentence for good measure, to pass the limit."
)
GAP_S = 0.3


def make_runtime(home: Path, **settings: Any) -> Runtime:
    values: dict[str, Any] = {"mode": "embedded", "home": home, "engine": "tests.support.engine", **settings}
    runtime = Runtime(Settings(**values))
    upgrade(runtime.settings.db_url)
    runtime.celery
    return runtime


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path, engine_options_json=json.dumps({"fail_text": "UNSAYABLE"}))
    yield runtime
    runtime.close()


@pytest.fixture()
def client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime=runtime))


def add_voice(client: TestClient, name: str = "narrator") -> str:
    samples, rate = speech_wav(REFERENCE_TEXT)
    response = client.post(
        "/v1/voices",
        files={"audio": ("ref.wav", encode(samples, rate, "wav"), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT, "name": name},
    )
    assert response.status_code == 202 and response.json()["status"] == "ready", response.text
    return str(response.json()["id"])


@pytest.fixture()
def voice_id(client: TestClient) -> str:
    return add_voice(client)


def job_row(runtime: Runtime, job_id: str) -> tuple[Job, list[Segment]]:
    with runtime.transaction() as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        segments = list(session.scalars(select(Segment).where(Segment.job_id == job.id).order_by(Segment.index)))
        return job, segments


def settled(runtime: Runtime, job_id: str) -> Job:
    """The inline render goes on after the response (assembly); wait for the job to end."""

    def done() -> Job | None:
        job, _ = job_row(runtime, job_id)
        return job if job.status in ("succeeded", "failed", "cancelled") else None

    job: Job = wait_for(done, 60, f"job {job_id} to finish")
    inline = f"voxmill-sync-{job_id}"  # the embedded render's thread (jobs.sync)
    wait_for(lambda: not any(t.name == inline for t in threading.enumerate()), 60, "the inline render to end")
    return job


def expected_int16(runtime: Runtime, job_id: str) -> np.ndarray:
    """What the response must hold: each stored segment (post stage output), 0.3 s apart."""
    _, segments = job_row(runtime, job_id)
    parts: list[np.ndarray] = []
    for i, segment in enumerate(segments):
        assert segment.status == "succeeded" and segment.audio_key
        samples, rate = soundfile.read(io.BytesIO(runtime.storage.get(segment.audio_key)), dtype="float32")
        assert rate == 32000
        if i:
            parts.append(np.zeros(round(GAP_S * rate), np.float32))
        parts.append(samples)
    joined = np.clip(np.concatenate(parts), -1, 1) * 32767
    return np.round(joined).astype(np.int16)


def ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int, str]:
    """Decode any stream with ffmpeg (streamed FLAC/WAV have unknown lengths): samples, rate, codec."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,sample_rate", "-of", "json", "-i", "pipe:0"],
        input=data, capture_output=True, check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "pipe:1"],
        input=data, capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.float32), int(stream["sample_rate"]), str(stream["codec_name"])


def test_tts_answers_with_the_jobs_segments_as_stored(client: TestClient, runtime: Runtime, voice_id: str) -> None:
    response = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["voxmill-sample-rate"] == "32000"
    assert response.headers["voxmill-model-version"] == "test-engine-1"
    job_id = response.headers["voxmill-job-id"]

    # A streamed WAV: sizes unknown in the header, then exactly the stored segments, 0.3 s apart.
    assert response.content[4:8] == b"\xff\xff\xff\xff" and response.content[40:44] == b"\xff\xff\xff\xff"
    samples = np.frombuffer(response.content[44:], "<i2")
    expected = expected_int16(runtime, job_id)
    _, segments = job_row(runtime, job_id)
    assert len(segments) == 2
    assert np.array_equal(samples, expected)

    # It was an ordinary job: the same states as any other, and its assembled file is served.
    job = settled(runtime, job_id)
    assert job.status == "succeeded" and job.text == TEXT and job.output_format == "wav"
    with runtime.transaction() as session:
        history = session.scalars(
            select(StateTransition.to_status)
            .where(StateTransition.entity == "job", StateTransition.job_id == job.id)
            .order_by(StateTransition.id)
        ).all()
    assert list(history) == ["queued", "running", "assembling", "succeeded"]
    assert client.get(f"/v1/jobs/{job_id}/audio").content[:4] == b"RIFF"

    # JSON when asked (field or Accept): the same samples, base64, with the lengths filled in.
    for extra, headers in (({"response": "json"}, {}), ({}, {"Accept": "application/json"})):
        answer = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, **extra}, headers=headers)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["segments"] == 2 and body["sample_rate"] == 32000 and body["content_type"] == "audio/wav"
        data = base64.b64decode(body["audio_base64"])
        decoded, rate = soundfile.read(io.BytesIO(data), dtype="int16")
        assert rate == 32000 and np.array_equal(decoded, expected)  # deterministic engine: same audio
        assert body["duration_s"] == pytest.approx(len(expected) / 32000, abs=1e-3)
        settled(runtime, body["job_id"])

    # pcm: the same samples without a header.
    pcm = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, "format": "pcm"})
    assert pcm.headers["content-type"] == "audio/pcm" and pcm.content == response.content[44:]
    settled(runtime, pcm.headers["voxmill-job-id"])


@pytest.mark.requires_tools
def test_tts_streams_every_format(client: TestClient, runtime: Runtime, voice_id: str) -> None:
    reference = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, "response": "json"}).json()
    duration = reference["duration_s"]
    settled(runtime, reference["job_id"])
    cases = {"mp3": ("mp3", 32000), "opus": ("opus", 48000), "aac": ("aac", 32000), "flac": ("flac", 32000)}
    for fmt, (codec, rate) in cases.items():
        response = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, "format": fmt})
        assert response.status_code == 200, response.text
        assert response.headers["voxmill-sample-rate"] == str(rate)
        samples, decoded_rate, decoded_codec = ffmpeg_decode(response.content)
        assert (decoded_codec, decoded_rate) == (codec, rate), fmt
        # Lossy encoders add their delay and padding; nothing more.
        assert abs(len(samples) / rate - duration) < 0.1, (fmt, len(samples) / rate, duration)
        job = settled(runtime, response.headers["voxmill-job-id"])
        assert job.status == "succeeded" and job.output_format == {"aac": "m4a"}.get(fmt, fmt)

    # FLAC is lossless: the whole file (sample count filled in) holds exactly the WAV's samples.
    flac = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, "format": "flac", "response": "json"})
    samples16, rate = soundfile.read(io.BytesIO(base64.b64decode(flac.json()["audio_base64"])), dtype="int16")
    wav16, _ = soundfile.read(io.BytesIO(base64.b64decode(reference["audio_base64"])), dtype="int16")
    assert rate == 32000 and np.array_equal(samples16, wav16)
    settled(runtime, flac.json()["job_id"])

    # Another rate: resampled from the stored 32 kHz segments.
    low = client.post("/v1/tts", json={"text": TEXT, "voice_id": voice_id, "sample_rate": 16000, "response": "json"})
    body = low.json()
    assert body["sample_rate"] == 16000 and abs(body["duration_s"] - duration) < 0.005
    settled(runtime, body["job_id"])


def count_jobs(runtime: Runtime) -> int:
    with runtime.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_errors_have_codes_and_store_nothing_when_refused(client: TestClient, runtime: Runtime, voice_id: str) -> None:
    before = count_jobs(runtime)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"text": "x" * 501, "voice_id": voice_id}, 413, "text_too_long"),
        ({"text": "Hello.", "voice_id": str(uuid.uuid4())}, 404, "voice_not_found"),
        ({"text": "Hello.", "voice_id": voice_id, "format": "m4a"}, 422, "invalid_request"),
        ({"text": "Hello.", "voice_id": voice_id, "format": "opus", "sample_rate": 32000}, 422, "sample_rate_unsupported"),
        ({"text": "   ", "voice_id": voice_id}, 422, "empty_text"),
        ({"text": "Hello.", "voice_id": voice_id, "surprise": True}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = client.post("/v1/tts", json=body)
        assert response.status_code == status and response.json()["error"]["code"] == code, (body, response.text)
    assert count_jobs(runtime) == before

    # The engine refuses the first segment: no audio yet, so a status and the segment's code.
    refused = client.post("/v1/tts", json={"text": "UNSAYABLE words here.", "voice_id": voice_id})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "unspeakable_text"
    job = settled(runtime, refused.headers["voxmill-job-id"])
    assert job.status == "failed"

    # A later segment fails after the first was sent: the stream ends early, with the error.
    with pytest.raises(StreamInterrupted) as failure:
        client.post("/v1/tts", json={"text": TEXT.replace("And a third!", "And UNSAYABLE!"), "voice_id": voice_id})
    cause = failure.value.cause
    assert getattr(cause, "code", None) == "unspeakable_text"
    assert settled(runtime, str(getattr(cause, "job_id"))).status == "failed"


def test_openai_shape_errors_and_voice_names(client: TestClient, runtime: Runtime, voice_id: str) -> None:
    def error(response: Any, status: int, code: str, param: str | None) -> None:
        assert response.status_code == status, response.text
        body = response.json()["error"]
        assert (body["code"], body["param"]) == (code, param) and body["message"]
        assert body["type"] == ("invalid_request_error" if status < 500 else "server_error")

    base = {"model": "tts-1", "input": "Hello there, this is short."}
    error(client.post("/v1/audio/speech", json={**base, "voice": "nobody"}), 404, "voice_not_found", "voice")
    error(client.post("/v1/audio/speech", json={**base, "voice": "narrator", "speed": 4.0}), 422, "invalid_request", "speed")
    error(
        client.post("/v1/audio/speech", json={**base, "voice": "narrator", "stream_format": "sse"}),
        422, "invalid_request", "stream_format",
    )
    error(client.post("/v1/audio/speech", json={**base, "voice": "narrator", "input": "y" * 501}), 413, "text_too_long", "input")
    error(client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "narrator"}), 422, "invalid_request", "input")

    # A voice by name (a ready one, the newest first), by id, or as {"id": ...}; any model name;
    # instructions and unknown fields are ignored. OpenAI's pcm is 24 kHz.
    newer = add_voice(client, "narrator")
    for voice in ("narrator", newer, {"id": newer}):
        response = client.post(
            "/v1/audio/speech",
            json={**base, "voice": voice, "model": "anything", "response_format": "pcm", "instructions": "calm", "x": 1},
        )
        assert response.status_code == 200, response.text
        assert response.headers["voxmill-sample-rate"] == "24000"
        job = settled(runtime, response.headers["voxmill-job-id"])
        assert str(job.voice_id) == newer and job.sample_rate == 24000 and job.params["speed"] == 1.0
        durations = [s.duration_s or 0.0 for s in job_row(runtime, str(job.id))[1]]
        expected = 24000 * (sum(durations) + GAP_S * (len(durations) - 1))
        assert abs(len(response.content) / 2 - expected) <= 2 * len(durations)
    slow = client.post("/v1/audio/speech", json={**base, "voice": voice_id, "speed": 0.5, "response_format": "wav"})
    assert slow.status_code == 200 and slow.headers["content-type"] == "audio/wav"
    assert settled(runtime, slow.headers["voxmill-job-id"]).params["speed"] == 0.5


def test_timeout_cancels_the_job(tmp_path: Path) -> None:
    release = tmp_path / "release"
    runtime = make_runtime(
        tmp_path,
        sync_timeout_s=1.0,
        engine_options_json=json.dumps({"hold_text": "slowly", "release_file": str(release), "hold_max_s": 3}),
    )
    try:
        client = TestClient(create_app(runtime=runtime))
        voice_id = add_voice(client)
        response = client.post("/v1/tts", json={"text": "This one is spoken slowly.", "voice_id": voice_id})
        assert response.status_code == 504 and response.json()["error"]["code"] == "sync_timeout"
        job_id = response.headers["voxmill-job-id"]
        # Cancelled while its only segment was still held in the gpt stage: nothing was rendered.
        job, segments = job_row(runtime, job_id)
        assert job.status == "cancelled" and [s.status for s in segments] == ["cancelled"]
        with runtime.transaction() as session:
            stages = session.scalars(
                select(StateTransition.to_status).where(StateTransition.entity_id == segments[0].id)
            ).all()
        assert "gpt_done" not in stages and "gpt_running" in stages
        release.touch()
        settled(runtime, job_id)
    finally:
        runtime.close()
