"""The api_v2 drop-in on real parts: the official ``/tts`` parameter set, GET and POST, streaming
and not, in every official media type, rendered through the three worker pools (the test engine);
``/set_gpt_weights`` / ``/set_sovits_weights`` choose registered weights for the calling key
only; errors read as the official server's (``message``, ``Exception``, 400) and carry our code."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile
from sqlalchemy import select

from db.models import Job
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.jobs.test_distributed import REFERENCE_TEXT, reference_wav
from tests.support.front import new_key, new_tenant
from tests.support.models import register, write_pair
from tests.support.services import Cluster, wait_for

TEXT = "The first sentence is short. The second one is a little longer than the first one."


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_pair(root / "a", seed=5)
    write_pair(root / "b", seed=6)
    return root


def official(voice: str, **extra: Any) -> dict[str, Any]:
    """Every official parameter, with the official defaults, as the official clients send them."""
    return {
        "text": TEXT,
        "text_lang": "en",
        "ref_audio_path": voice,
        "aux_ref_audio_paths": [],
        "prompt_text": REFERENCE_TEXT,
        "prompt_lang": "en",
        "top_k": 15,
        "top_p": 1,
        "temperature": 1,
        "text_split_method": "cut5",
        "batch_size": 1,
        "batch_threshold": 0.75,
        "split_bucket": True,
        "speed_factor": 1.0,
        "fragment_interval": 0.3,
        "seed": -1,
        "media_type": "wav",
        "streaming_mode": False,
        "parallel_infer": True,
        "repetition_penalty": 1.35,
        "sample_steps": 32,
        "super_sampling": False,
        "overlap_length": 2,
        "min_chunk_length": 16,
        **extra,
    }


def query(params: dict[str, Any]) -> list[tuple[str, str]]:
    """A GET query string as the official clients build it (booleans as true/false)."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, list):
            out += [(key, str(v)) for v in value]
        elif isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        else:
            out.append((key, str(value)))
    return out


def official_error(response: httpx.Response, status: int, code: str, message: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["message"], str) and body["message"], body
    assert body["error"]["code"] == code and body["error"]["message"], body
    if message is not None:
        assert body["message"] == message, body
    return body


def test_official_tts_through_the_pools_with_per_key_weights(
    cluster_factory: Any, pairs: Path, tmp_path: Path
) -> None:
    cluster: Cluster = cluster_factory(VOXMILL_AUTH_REQUIRED="true", VOXMILL_MODELS_DIR=str(pairs))
    runtime = Runtime(Settings(mode="distributed", database_url=cluster.env["VOXMILL_DATABASE_URL"], home=tmp_path))
    tenant = new_tenant(runtime)
    first, second = new_key(runtime, tenant, "bot"), new_key(runtime, tenant, "dubbing")
    a = register(runtime, "house-a", pairs / "a/gpt.ckpt", pairs / "a/sovits.pth", tenant_id=tenant)
    b = register(runtime, "house-b", pairs / "b/gpt.ckpt", pairs / "b/sovits.pth", tenant_id=tenant)
    cluster.worker("gpt")
    cluster.worker("sovits")
    cluster.worker("post")
    api = cluster.api()
    created = httpx.post(
        f"{api}/v1/voices",
        files={"audio": ("me.wav", reference_wav(), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT, "name": "jingyuan"},
        headers=first,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    voice_id = created.json()["id"]
    wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice_id}", headers=first).json()["status"] == "ready", 60, "voice")

    def job(response: httpx.Response) -> Job:
        with runtime.transaction() as session:
            row = session.get(Job, uuid.UUID(response.headers["voxmill-job-id"]))
            assert row is not None
            session.expunge(row)
            return row

    # GET, not streaming, WAV: one whole file with its sizes filled in.
    got = httpx.get(f"{api}/tts", params=query(official("jingyuan")), headers=first, timeout=60)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav", got.text
    samples, rate = soundfile.read(io.BytesIO(got.content))
    assert rate == 32000 and len(samples) > rate // 2
    rendered = job(got)
    assert rendered.split_method == "punctuation" and rendered.segments_total >= 2  # cut5
    assert rendered.model_name is None  # nothing chosen: the voice's (default) model

    # POST, streaming raw PCM (streaming_mode true): s16le samples, as many as the WAV's.
    with httpx.stream(
        "POST", f"{api}/tts", json=official(voice_id, media_type="raw", streaming_mode=True), headers=first, timeout=60
    ) as streamed:
        assert streamed.status_code == 200 and streamed.headers["content-type"] == "audio/raw"
        assert "content-length" not in streamed.headers  # chunked: segment by segment
        pcm = b"".join(streamed.iter_bytes())
    assert len(pcm) == 2 * len(samples)

    # The other official media types, by both methods and both streaming modes.
    ogg = httpx.post(f"{api}/tts", json=official(voice_id, media_type="ogg"), headers=first, timeout=60)
    assert ogg.status_code == 200 and ogg.headers["content-type"] == "audio/ogg" and ogg.content[:4] == b"OggS"
    aac = httpx.get(f"{api}/tts", params=query(official("jingyuan", media_type="aac", streaming_mode=1)), headers=first, timeout=60)
    assert aac.status_code == 200 and aac.content[0] == 0xFF and aac.content[1] & 0xF0 == 0xF0  # ADTS sync
    wav_stream = httpx.post(f"{api}/tts", json=official(voice_id, streaming_mode=2), headers=first, timeout=60)
    assert wav_stream.status_code == 200 and wav_stream.content[:4] == b"RIFF"

    # The first key chooses house-a's GPT (by name) and house-b's SoVITS (by registered path).
    chose = httpx.get(f"{api}/set_gpt_weights", params={"weights_path": a.name}, headers=first)
    assert chose.status_code == 200 and chose.json() == {"message": "success"}
    chose = httpx.get(f"{api}/set_sovits_weights", params={"weights_path": str(pairs / "b/sovits.pth")}, headers=first)
    assert chose.status_code == 200, chose.text
    mine = httpx.post(f"{api}/tts", json=official(voice_id), headers=first, timeout=60)
    assert mine.status_code == 200, mine.text
    row = job(mine)
    assert (row.model_name, row.model_gpt_sha256, row.model_sovits_sha256) == (
        "house-a+house-b",
        a.gpt_sha256,
        b.sovits_sha256,
    )
    assert mine.content != got.content  # other weights, other audio
    # ... and the second key of the same tenant still renders on the voice's own model.
    theirs = httpx.post(f"{api}/tts", json=official(voice_id), headers=second, timeout=60)
    assert theirs.status_code == 200 and job(theirs).model_name is None
    assert theirs.content == got.content  # the same request as the first: from the render cache

    # Errors in the official shape, with our code beside it.
    official_error(httpx.get(f"{api}/tts", params={"text_lang": "en", "ref_audio_path": "jingyuan"}, headers=first), 400, "text_required", "text is required")
    official_error(httpx.post(f"{api}/tts", json=official(""), headers=first), 400, "ref_audio_path_required", "ref_audio_path is required")
    official_error(httpx.post(f"{api}/tts", json=official(voice_id, media_type="mp3"), headers=first), 400, "unsupported_media_type", "media_type: mp3 is not supported")
    official_error(httpx.post(f"{api}/tts", json=official(voice_id, text_split_method="cut9"), headers=first), 400, "unsupported_split_method")
    official_error(httpx.post(f"{api}/tts", json=official(voice_id, streaming_mode=7), headers=first), 400, "invalid_streaming_mode")
    official_error(httpx.get(f"{api}/tts", params=query(official("jingyuan", top_k="many")), headers=first), 400, "invalid_request")
    unknown = official_error(httpx.post(f"{api}/tts", json=official("nobody"), headers=first), 400, "voice_not_found", "tts failed")
    assert "nobody" in unknown["Exception"]
    refused = official_error(
        httpx.get(f"{api}/set_sovits_weights", params={"weights_path": "/srv/weights/s2G488k.pth"}, headers=second),
        400,
        "model_not_found",
        "change sovits weight failed",
    )
    assert "not a registered model" in refused["Exception"]
    official_error(httpx.get(f"{api}/set_gpt_weights", headers=second), 400, "weights_path_required", "gpt weight path is required")
    official_error(httpx.get(f"{api}/tts", params=query(official("jingyuan"))), 401, "unauthorized")
    runtime.close()
