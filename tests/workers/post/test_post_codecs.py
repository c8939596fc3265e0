"""Encoders: rates, MIME types, errors and determinism; ACX delivery and chapters through an encoder.
(Every format × every preset after decoding: test_post_delivery.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from workers.post.audio import codecs
from workers.post.audio.codecs import FORMATS, EncoderError, decode, encode, get_format
from workers.post.audio.loudness import ACX, VOICE_OVER
from workers.post.audio.meter import integrated_loudness, rms_db, sample_peak_db, true_peak_db
from workers.post.audio.pipeline import finish

RATE = 32000


def test_acx_delivery_mp3(speech: np.ndarray) -> None:
    # ACX wants 44.1 kHz, 192 kb/s CBR MP3, -23..-18 dBFS RMS, peaks ≤ -3 dBFS.
    x = np.concatenate([speech, np.zeros(RATE)])
    x = x + np.random.default_rng(0).normal(0, 10 ** (-85 / 20), len(x))
    done = finish(x, RATE, "mp3", ACX, target_rate=44100, bitrate="192k")
    decoded, rate = decode(done.data, "mp3")
    assert rate == 44100
    assert -23 <= rms_db(decoded) <= -18
    assert sample_peak_db(decoded) <= -3
    assert done.report.noise_floor_db <= -60
    assert done.report.passed


def test_chapter_through_an_encoder(sentences: dict[str, np.ndarray]) -> None:
    segments = [0.05 * sentences["a"], sentences["b"], 3.0 * sentences["c"]]
    done = finish(segments, RATE, "wav24", VOICE_OVER, gap_s=0.3)
    decoded, rate = decode(done.data)
    gap = round(0.3 * rate)
    lengths = [len(s) for s in segments]
    starts = np.cumsum([0] + [n + gap for n in lengths[:-1]])
    levels = [
        integrated_loudness(decoded[s : s + n], rate)
        for s, n in zip(starts, lengths, strict=True)
    ]
    assert max(levels) - min(levels) < 1.0
    assert len(decoded) == sum(lengths) + 2 * gap
    assert not np.any(decoded[starts[1] - gap : starts[1]])  # the pause is silent
    assert integrated_loudness(decoded, rate) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(decoded, rate) <= -1.0


def test_chapter_through_a_lossy_encoder(sentences: dict[str, np.ndarray]) -> None:
    segments = [0.05 * sentences["a"], sentences["b"], 3.0 * sentences["c"]]
    done = finish(segments, RATE, "opus", VOICE_OVER)
    decoded, rate = decode(done.data, "opus")
    assert done.segment_levels is not None and len(done.segment_levels) == 3
    assert integrated_loudness(decoded, rate) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(decoded, rate) <= -1.0


def test_pcm_round_trips_within_one_step(speech: np.ndarray) -> None:
    x = 0.5 * speech
    for fmt, bits in (("wav16", 16), ("flac", 16), ("wav24", 24), ("flac24", 24)):
        y, rate = decode(encode(x, RATE, fmt), fmt)
        assert rate == RATE and y.shape == x.shape
        assert np.max(np.abs(y - x)) <= 1.0 / 2 ** (bits - 1)


def test_pcm_clips_instead_of_wrapping() -> None:
    x = np.array([0.0, 1.5, -1.5, 0.25], np.float32)
    y, _ = decode(encode(x, RATE, "wav16"))
    assert y[1] > 0.99 and y[2] < -0.99


def test_sample_rates(speech: np.ndarray) -> None:
    y, rate = decode(encode(speech, RATE, "wav16", 48000))
    assert rate == 48000 and abs(len(y) - len(speech) * 3 // 2) <= 1
    _, rate = decode(encode(speech, RATE, "opus"), "opus")
    assert rate == 48000  # Opus cannot carry 32 kHz: the format's default rate is used
    _, rate = decode(encode(speech, RATE, "mp3", 44100), "mp3")
    assert rate == 44100
    with pytest.raises(EncoderError, match="cannot carry"):
        encode(speech, RATE, "mp3", 96000)
    with pytest.raises(EncoderError, match="cannot carry"):
        finish(speech, RATE, "opus", VOICE_OVER, target_rate=44100)


def test_formats_and_aliases() -> None:
    assert get_format("WAV").name == "wav16"
    assert get_format("aac").name == "m4a"
    assert get_format("ogg").name == "opus"
    assert {f.mime for f in FORMATS.values()} == {
        "audio/wav", "audio/flac", "audio/mpeg", "audio/ogg", "audio/mp4"
    }
    assert FORMATS["mp3"].extension == ".mp3" and FORMATS["m4a"].extension == ".m4a"
    with pytest.raises(EncoderError, match="unknown audio format"):
        get_format("wma")


def test_lossy_encodes_are_deterministic(speech: np.ndarray) -> None:
    # Objects are stored under content-derived keys: same samples, same bytes.
    for fmt in ("mp3", "opus", "m4a"):
        assert encode(speech, RATE, fmt) == encode(speech, RATE, fmt)


def test_missing_ffmpeg_is_a_clear_error(
    speech: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codecs, "FFMPEG", "ffmpeg-not-installed-here")
    with pytest.raises(EncoderError, match="not found on PATH"):
        encode(speech, RATE, "mp3")
    encode(speech, RATE, "flac")  # soundfile formats do not need it


def test_ffmpeg_failure_carries_its_message(speech: np.ndarray) -> None:
    with pytest.raises(EncoderError, match="ffmpeg exited"):
        encode(speech, RATE, "mp3", bitrate="not-a-bitrate")
    with pytest.raises(EncoderError):
        decode(b"definitely not audio", "mp3")


def test_silent_and_short_input_encode(speech: np.ndarray) -> None:
    done = finish(np.zeros(RATE // 10, np.float32), RATE, "mp3", VOICE_OVER)
    decoded, _ = decode(done.data, "mp3")
    assert np.max(np.abs(decoded), initial=0.0) < 1e-3
    assert not done.report.passed
    done = finish(speech[: RATE // 5], RATE, "m4a", VOICE_OVER)  # 200 ms
    decoded, rate = decode(done.data, "m4a")
    assert true_peak_db(decoded, rate) <= -1.0
