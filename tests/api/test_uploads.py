"""Voice uploads through HTTP (in-process API, PostgreSQL, Redis, S3 on moto): every malformed or
hostile upload is answered 4xx with its own code and leaves no voice row and no stored object;
good speech is accepted whatever its name or Content-Type says."""

from __future__ import annotations

import functools
import io
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from jobs.runtime import Runtime
from tests.support import speech as S
from tests.support.front import api, assert_error, distributed_settings, new_key, new_tenant, voice_count
from tests.support.services import S3Server, redis_url

MAX_UPLOAD = 32 * 1024 * 1024
SR = 22050
TRANSCRIPT = "The morning train was late again, so we walked along the river to the old stone bridge."


@dataclass
class Front:
    client: TestClient
    runtime: Runtime
    s3: S3Server
    tenant_id: uuid.UUID
    headers: dict[str, str]

    def objects(self) -> list[str]:
        return self.s3.keys(f"tenants/{self.tenant_id}/")


@pytest.fixture(scope="module")
def front_api(
    pg_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Runtime]]:
    settings = distributed_settings(
        pg_url, redis_url(11), tmp_path_factory.mktemp("uploads"), s3_server, max_upload_bytes=MAX_UPLOAD
    )
    with api(settings) as (client, runtime, _):
        yield client, runtime


@pytest.fixture()
def front(front_api: tuple[TestClient, Runtime], s3_server: S3Server) -> Front:
    """The API, and a tenant of this test's own with a key."""
    client, runtime = front_api
    tenant_id = new_tenant(runtime)
    return Front(client, runtime, s3_server, tenant_id, new_key(runtime, tenant_id))


# --- a multipart encoder that sends exactly the bytes given (names, file names, field values) ---


@dataclass
class Part:
    name: bytes
    data: bytes
    filename: bytes | None = None
    content_type: bytes | None = None


def multipart(parts: list[Part], boundary: bytes = b"vxboundary7MA4YWxkTrZu0gW") -> tuple[bytes, str]:
    out = io.BytesIO()
    for p in parts:
        out.write(b"--" + boundary + b"\r\n")
        disposition = b'Content-Disposition: form-data; name="' + p.name + b'"'
        if p.filename is not None:
            disposition += b'; filename="' + p.filename + b'"'
        out.write(disposition + b"\r\n")
        if p.content_type is not None:
            out.write(b"Content-Type: " + p.content_type + b"\r\n")
        out.write(b"\r\n" + p.data + b"\r\n")
    out.write(b"--" + boundary + b"--\r\n")
    return out.getvalue(), f"multipart/form-data; boundary={boundary.decode()}"


@dataclass
class Upload:
    audio: bytes | None
    filename: bytes = b"voice.wav"
    content_type: bytes = b"audio/wav"
    fields: dict[bytes, bytes] = field(default_factory=lambda: {b"language": b"en"})

    def encode(self) -> tuple[bytes, str]:
        parts = [Part(k, v) for k, v in self.fields.items()]
        if self.audio is not None:
            parts.append(Part(b"audio", self.audio, self.filename, self.content_type))
        return multipart(parts)


# --- the uploads ---------------------------------------------------------------------------


@functools.cache
def _speech(seconds: float) -> tuple[np.ndarray, int]:
    x, sr = S.speech_seconds(seconds)
    return x[: int(seconds * sr)].copy(), sr


def _wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    return S.encode(x, sr, "wav", subtype)


def good_wav() -> bytes:
    return _wav(*_speech(6.0))


def _thirty_minutes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(3)
    with sf.SoundFile(buf, "w", 8000, 1, format="WAV", subtype="PCM_16") as f:
        for _ in range(30):
            f.write((rng.standard_normal(8000 * 60) * 0.01).astype(np.float32))
    return buf.getvalue()


def _flac_bomb() -> bytes:
    """Three hours of digital silence in a few hundred kB of FLAC, its length field zeroed."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(1 << 20, dtype=np.int16)
        for _ in range(3 * 3600 * 8000 // len(block)):
            f.write(block)
    data = bytearray(buf.getvalue())
    word = struct.unpack_from(">Q", data, 18)[0]
    struct.pack_into(">Q", data, 18, word & ~((1 << 36) - 1))
    return bytes(data)


def _fragments() -> bytes:
    x, sr = _speech(1.0)
    gap = S.silence(9.5, sr)
    return _wav(np.concatenate([x, gap, x, gap, x, gap, x]), sr)


def _clipped() -> bytes:
    x, sr = _speech(8.0)
    return _wav(S.clip(x / np.abs(x).max(), 8.0), sr)


def _truncated() -> bytes:
    data = good_wav()
    return data[: len(data) // 2]


def _mp3_short() -> bytes:
    x, sr = _speech(1.5)
    return S.encode(x, sr, "mp3")


def _eight_channels() -> bytes:
    x, sr = _speech(5.0)
    return _wav(np.repeat(x[:, None], 8, axis=1), sr)


def _rate_384k() -> bytes:
    x, _ = _speech(4.0)
    return _wav(x, 384_000)


def _noisy() -> bytes:
    x, sr = _speech(12.0)
    return _wav(S.add_noise(x, sr, snr_db=5.0), sr, "FLOAT")


HOSTILE: list[tuple[str, Callable[[], Upload], int, str]] = [
    ("empty_file", lambda: Upload(b""), 422, "empty_file"),
    ("random_bytes_named_wav", lambda: Upload(np.random.default_rng(7).bytes(64_000)), 415, "unsupported_audio_format"),
    ("truncated_wav", lambda: Upload(_truncated()), 415, "unsupported_audio_format"),
    ("html_named_wav", lambda: Upload(b"<!doctype html><html>" + b"not audio " * 400), 415, "unsupported_audio_format"),
    ("hls_playlist_reading_a_local_file", lambda: Upload(
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        b"list.m3u8", b"application/vnd.apple.mpegurl"), 415, "unsupported_audio_format"),
    # Decoded as MP3 whatever the label says: the code is about its length, not its format.
    ("mp3_labelled_audio_wav", lambda: Upload(_mp3_short(), b"voice.wav", b"audio/wav"), 422, "audio_too_short"),
    ("one_second_of_speech", lambda: Upload(_wav(*_speech(1.0))), 422, "audio_too_short"),
    ("thirty_minutes_of_audio", lambda: Upload(_thirty_minutes()), 422, "audio_too_long"),
    ("zip_bomb_like_flac", lambda: Upload(_flac_bomb(), b"voice.flac", b"audio/flac"), 422, "audio_too_long"),
    ("pure_silence", lambda: Upload(_wav(S.silence(10.0, SR), SR)), 422, "reference_silent"),
    ("white_noise", lambda: Upload(_wav(S.white_noise(10.0, SR), SR)), 422, "reference_not_speech"),
    ("synthetic_music", lambda: Upload(_wav(S.music(12.0, SR), SR)), 422, "reference_not_speech"),
    ("pure_tones", lambda: Upload(_wav(S.tones(10.0, SR, (440.0, 660.0)), SR)), 422, "reference_not_speech"),
    ("speech_at_5dB_snr", lambda: Upload(_noisy()), 422, "reference_too_noisy"),
    ("clipped_speech", lambda: Upload(_clipped()), 422, "reference_clipped"),
    ("speech_fragments", lambda: Upload(_fragments()), 422, "reference_fragmented"),
    ("eight_channels", lambda: Upload(_eight_channels()), 422, "too_many_channels"),
    ("rate_384kHz", lambda: Upload(_rate_384k()), 422, "sample_rate_unsupported"),
    ("transcript_not_utf8", lambda: Upload(good_wav(), fields={b"language": b"en", b"transcript": b"caf\xe9 \xff\xfe"}),
     422, "transcript_not_utf8"),
    ("transcript_with_nul", lambda: Upload(good_wav(), fields={b"transcript": b"hello\x00world"}), 422,
     "invalid_transcript"),
    ("transcript_too_long", lambda: Upload(good_wav(), fields={b"transcript": b"a" * 2001}), 422, "transcript_too_long"),
    ("name_not_utf8", lambda: Upload(good_wav(), fields={b"name": b"\xc3\x28 voice"}), 422, "name_not_utf8"),
    ("unsupported_language", lambda: Upload(good_wav(), fields={b"language": b"fr"}), 422, "unsupported_language"),
    ("path_traversal_file_name", lambda: Upload(good_wav(), filename=b"../../../etc/cron.d/voice.wav"), 422,
     "invalid_filename"),
    ("windows_path_file_name", lambda: Upload(good_wav(), filename=b"..\\..\\boot.ini"), 422, "invalid_filename"),
    ("file_name_with_control_characters", lambda: Upload(good_wav(), filename=b"voice\x1b[2J.wav"), 422,
     "invalid_filename"),
    ("no_audio_part", lambda: Upload(None), 422, "invalid_request"),
    ("file_over_the_upload_limit", lambda: Upload(bytes(MAX_UPLOAD + 10_000)), 413, "file_too_large"),
    ("body_over_the_request_limit", lambda: Upload(bytes(MAX_UPLOAD + 400_000)), 413, "request_too_large"),
]


@pytest.mark.requires_tools
@pytest.mark.parametrize("build,status,code", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_upload_is_refused_and_stores_nothing(
    front: Front, build: Callable[[], Upload], status: int, code: str
) -> None:
    body, content_type = build().encode()
    response = front.client.post(
        "/v1/voices", content=body, headers={**front.headers, "Content-Type": content_type}
    )
    assert_error(response, status, code)
    assert voice_count(front.runtime, front.tenant_id) == 0
    assert front.objects() == []


def test_malformed_requests_are_refused(front: Front) -> None:
    def post(body: bytes, content_type: str) -> Any:
        return front.client.post("/v1/voices", content=body, headers={**front.headers, "Content-Type": content_type})

    assert_error(post(b'{"audio": "x"}', "application/json"), 422, "invalid_request")
    assert_error(post(b"--x\r\nno headers, no end", "multipart/form-data"), 400, "invalid_multipart")
    twice, content_type = multipart([Part(b"audio", b"a", b"a.wav"), Part(b"audio", b"b", b"b.wav")])
    assert_error(post(twice, content_type), 400, "invalid_multipart")
    nameless = b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"
    assert_error(post(nameless, "multipart/form-data; boundary=b"), 400, "invalid_multipart")
    assert voice_count(front.runtime, front.tenant_id) == 0
    assert front.objects() == []


@pytest.mark.requires_tools
def test_good_speech_is_accepted_whatever_it_is_called(front: Front) -> None:
    """The positive side of the table: real speech as MP3 named .wav and labelled audio/wav is
    decoded as MP3 and stored, once (the refusals above were not for lack of a working path)."""
    x, sr = _speech(6.0)
    upload = Upload(S.encode(x, sr, "mp3"), b"my voice.wav", b"audio/wav", {b"transcript": TRANSCRIPT.encode()})
    body, content_type = upload.encode()
    response = front.client.post("/v1/voices", content=body, headers={**front.headers, "Content-Type": content_type})
    assert response.status_code == 202, response.text
    voice = response.json()
    assert voice["status"] == "pending"  # no sovits worker here: it waits in the queue
    assert voice["name"] == "my voice.wav" and voice["language"] == "en"
    assert "mp3" in voice["analysis"]["container"]
    assert voice_count(front.runtime, front.tenant_id) == 1
    assert front.objects() == [f"tenants/{front.tenant_id}/voices/{voice['id']}/references.npz"]
