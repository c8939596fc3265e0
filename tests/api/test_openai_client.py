"""The official ``openai`` Python client pointed at a running voxmill API (``base_url=…/v1``):
in embedded mode (``voxmill api``, one process, SQLite, stages inline) and on a cluster (API +
gpt/sovits/post pools, PostgreSQL, Redis, S3). The test engine holds the segment that contains
``release file`` in the gpt stage until the test creates that file, so "the first segment is
on the wire while a later one still renders" is checked by cause, not by timing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.migrate import upgrade
from db.models import Job, Segment
from tests.support.services import REPO_ROOT, Cluster, wait_for
from tests.support.speech import encode, speech_wav

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
# Two segments with the sync split; the second holds in the gpt stage until released.
HELD_TEXT = (
    "The first part is here, and it runs long enough to pass fifty characters. "
    "Then the second part waits for the release file before it is spoken aloud."
)
HOLD = "release file"
GAP_S = 0.3


def add_voice(api: str, name: str) -> str:
    samples, rate = speech_wav(REFERENCE_TEXT)
    response = httpx.post(
        f"{api}/v1/voices",
        files={"audio": ("me.wav", encode(samples, rate, "wav"), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT, "name": name},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    voice_id: str = response.json()["id"]
    wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice_id}").json()["status"] == "ready", 60, "the voice")
    return voice_id


def client_for(api: str) -> openai.OpenAI:
    # No retries: a failure must show as one, not as a second job.
    return openai.OpenAI(base_url=f"{api}/v1", api_key="not-checked", max_retries=0, timeout=120)


def rows(database_url: str, job_id: str) -> tuple[Job, list[Segment]]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            job = session.get(Job, uuid.UUID(job_id))
            assert job is not None
            segments = list(session.scalars(select(Segment).where(Segment.job_id == job.id).order_by(Segment.index)))
            session.expunge_all()
            return job, segments
    finally:
        engine.dispose()


def ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int]:
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate", "-of", "json", "-i", "pipe:0"],
        input=data, capture_output=True, check=True,
    )
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "pipe:1"],
        input=data, capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.float32), int(json.loads(probe.stdout)["streams"][0]["sample_rate"])


def stream_while_held(
    client: openai.OpenAI, voice: Any, response_format: str, release: Path, held_statuses: Callable[[str], list[str]]
) -> tuple[str, bytes]:
    """Stream HELD_TEXT; on the first audio bytes, the second segment must still be held in the
    gpt stage. Then release it and read the rest. Returns (job id, all bytes)."""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice=voice, input=HELD_TEXT, response_format=response_format  # type: ignore[arg-type]
    ) as response:
        assert response.status_code == 200
        job_id = response.headers["voxmill-job-id"]
        chunks = response.iter_bytes()
        first = b""
        while len(first) < 4000:  # past any container header: audio of the first segment
            first += next(chunks)
        assert held_statuses(job_id) == ["succeeded", "gpt_running"]
        release.touch()
        data = first + b"".join(chunks)
    return job_id, data


def expected_seconds(segments: list[Segment]) -> float:
    return sum(s.duration_s or 0.0 for s in segments) + GAP_S * (len(segments) - 1)


@pytest.fixture()
def embedded_api(tmp_path: Path) -> Iterator[tuple[str, Cluster, Path]]:
    """``voxmill api`` in embedded mode: one process, SQLite and a folder under its home."""
    home = tmp_path / "home"
    home.mkdir()
    release = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXMILL_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "VOXMILL_MODE": "embedded",
            "VOXMILL_HOME": str(home),
            "VOXMILL_ENGINE": "tests.support.engine",
            "VOXMILL_ENGINE_OPTIONS_JSON": json.dumps({"hold_text": HOLD, "release_file": str(release)}),
        }
    )
    upgrade(f"sqlite:///{(home / 'voxmill.db').resolve()}")
    cluster = Cluster(env=env, log_dir=tmp_path)
    try:
        yield cluster.api(), cluster, release
    finally:
        release.touch()  # never leave a render held
        cluster.stop_all()


def test_openai_client_against_embedded_api(embedded_api: tuple[str, Cluster, Path], tmp_path: Path) -> None:
    api, _, release = embedded_api
    database_url = f"sqlite:///{(tmp_path / 'home' / 'voxmill.db').resolve()}"
    voice_id = add_voice(api, "narrator")
    client = client_for(api)

    # A voice by name, any model name: the whole WAV, and an ordinary job behind it.
    audio = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="narrator", input="A short line, spoken at once.", response_format="wav"
    )
    samples, rate = soundfile.read(io.BytesIO(audio.content), dtype="float32")
    job, segments = rows(database_url, audio.response.headers["voxmill-job-id"])
    assert rate == 32000 and str(job.voice_id) == voice_id and job.text == "A short line, spoken at once."
    assert len(samples) == pytest.approx(expected_seconds(segments) * rate, abs=2)

    # Streamed: the first segment arrives while the second is still held (OpenAI pcm: 24 kHz).
    def statuses(job_id: str) -> list[str]:
        return [s.status for s in rows(database_url, job_id)[1]]

    job_id, pcm = stream_while_held(client, {"id": voice_id}, "pcm", release, statuses)
    job, segments = rows(database_url, job_id)
    assert [s.status for s in segments] == ["succeeded", "succeeded"] and job.sample_rate == 24000
    assert abs(len(pcm) / 2 / 24000 - expected_seconds(segments)) < 0.001

    # The client leaves mid-stream: nobody will hear the rest, so the job is cancelled.
    release.unlink()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="narrator", input=HELD_TEXT + " Once more.", response_format="wav"
    ) as response:
        job_id = response.headers["voxmill-job-id"]
        assert next(response.iter_bytes())
    wait_for(lambda: rows(database_url, job_id)[0].status == "cancelled", 60, "the abandoned job to be cancelled")
    assert statuses(job_id) == ["succeeded", "cancelled"]
    release.touch()

    # Errors read as OpenAI's client expects: a typed exception with code, type and param.
    with pytest.raises(openai.NotFoundError) as missing:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")
    assert (missing.value.code, missing.value.type, missing.value.param) == ("voice_not_found", "invalid_request_error", "voice")
    with pytest.raises(openai.APIStatusError) as too_long:
        client.audio.speech.create(model="tts-1", voice="narrator", input="x" * 501)
    assert too_long.value.status_code == 413 and too_long.value.code == "text_too_long"


@pytest.mark.requires_tools
def test_openai_client_against_a_cluster(cluster_factory: Any, tmp_path: Path) -> None:
    release = tmp_path / "release"
    calls = tmp_path / "calls"
    calls.mkdir()
    options = {"hold_text": HOLD, "release_file": str(release), "calls_dir": str(calls)}
    cluster: Cluster = cluster_factory(VOXMILL_ENGINE_OPTIONS_JSON=json.dumps(options))
    try:
        cluster.worker("gpt")
        cluster.worker("sovits")
        cluster.worker("post")
        api = cluster.api()
        voice_id = add_voice(api, "announcer")
        database_url = cluster.env["VOXMILL_DATABASE_URL"]
        client = client_for(api)

        def statuses(job_id: str) -> list[str]:
            return [s.status for s in rows(database_url, job_id)[1]]

        # MP3 through the streaming encoder, the first segment out while the second is held.
        job_id, mp3 = stream_while_held(client, "announcer", "mp3", release, statuses)
        samples, rate = ffmpeg_decode(mp3)
        job, segments = rows(database_url, job_id)
        assert rate == 32000 and [s.status for s in segments] == ["succeeded", "succeeded"]
        assert abs(len(samples) / rate - expected_seconds(segments)) < 0.1  # encoder delay and padding
        # Each segment went through the engine exactly once, on the worker pools.
        for stage in ("gpt", "sovits"):
            assert len((calls / f"{stage}.log").read_text().splitlines()) == len(segments)

        # The job behind it is an ordinary one: assembled, stored in S3, served by /v1/jobs.
        wait_for(lambda: rows(database_url, job_id)[0].status == "succeeded", 90, "the job's assembly")
        stored = httpx.get(f"{api}/v1/jobs/{job_id}/audio", timeout=30)
        assert stored.status_code == 200 and stored.headers["content-type"] == "audio/mpeg"

        # The same voice by id, WAV, in one call.
        audio = client.audio.speech.create(model="tts-1", voice=voice_id, input="And one more line.", response_format="wav")
        samples, rate = soundfile.read(io.BytesIO(audio.content), dtype="float32")
        _, segments = rows(database_url, audio.response.headers["voxmill-job-id"])
        assert rate == 32000 and len(samples) == pytest.approx(expected_seconds(segments) * rate, abs=2)
    finally:
        release.touch()
