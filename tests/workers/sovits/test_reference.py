"""Reference-audio onboarding: every hostile or unusable upload gets its own stable code, and good
speech comes back mono at 32/16 kHz with 3–10 s windows cut in pauses."""

from __future__ import annotations

import functools
import io
import struct
import subprocess
import sys
import time
import tracemalloc
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.support import speech as S
from workers.sovits import reference as R
from workers.sovits.reference import (
    RejectCode,
    ReferenceLimits,
    ReferenceRejected,
    analyse_reference,
)

torch.set_num_threads(1)

# These tools are installed by `infra/bootstrap.sh --test`; a test that needs a missing one fails.
needs_speech = needs_ffmpeg = pytest.mark.requires_tools

SR = 22050  # both fixture voices' native rate


@functools.cache
def _speech(seconds: float, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    return S.speech_seconds(seconds, sample_rate=sample_rate)


def speech_clip(seconds: float, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Speech cut to exactly `seconds` (read speech with sentence pauses)."""
    x, sr = _speech(seconds, sample_rate)
    return x[: int(seconds * sr)].copy(), sr


def wav(x: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    return S.encode(x, sr, "wav", subtype)


# --- hostile uploads --------------------------------------------------------------------------


def _random_bytes() -> bytes:
    return np.random.default_rng(7).bytes(64_000)  # "voice.wav" by name only


def _truncated_wav() -> bytes:
    x, sr = speech_clip(6.0)
    data = wav(x, sr)
    return data[: len(data) // 2]  # an upload cut off mid-transfer: header promises 6 s


def _header_only_wav() -> bytes:
    x, sr = speech_clip(6.0)
    return wav(x, sr)[:44]


def _truncated_flac() -> bytes:
    x, sr = speech_clip(6.0)
    data = S.encode(x, sr, "flac")
    return data[: int(len(data) * 0.6)]


def _html() -> bytes:
    return b"<!doctype html><html><body>" + b"not audio " * 500 + b"</body></html>"


def _hls_playlist() -> bytes:
    # If ffmpeg's HLS demuxer were allowed, this would make it read a local file.
    return b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(4000)


def _au_container() -> bytes:
    x, sr = speech_clip(5.0)
    return S.encode(x, sr, "au", "PCM_16")  # libsndfile reads it; we do not accept it


def _video_without_audio() -> bytes:
    out = subprocess.run(
        [
            "ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=4:r=5",
            "-c:v", "mpeg4", "-f", "matroska", "pipe:1",
        ],  # fmt: skip
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def _nan_float_wav() -> bytes:
    x, sr = speech_clip(5.0)
    x[1000:1010] = np.nan
    return wav(x, sr, "FLOAT")


def _one_second() -> bytes:
    x, sr = speech_clip(1.0)
    return wav(x, sr)


def _short_speech_in_silence() -> bytes:
    x, sr = speech_clip(1.5)
    pad = S.silence(5.0, sr)
    return wav(np.concatenate([pad, x, pad]), sr)  # 11.5 s long, 1.5 s of it speech


@functools.cache
def _long_noise_wav() -> bytes:
    """30 minutes of low-level noise at 8 kHz, written block by block (28.8 MB)."""
    buf = io.BytesIO()
    rng = np.random.default_rng(3)
    with sf.SoundFile(buf, "w", 8000, 1, format="WAV", subtype="PCM_16") as f:
        for _ in range(30):
            f.write((rng.standard_normal(8000 * 60) * 0.01).astype(np.float32))
    return buf.getvalue()


@functools.cache
def _flac_bomb() -> bytes:
    """Three hours of digital silence in ~270 kB of FLAC, with STREAMINFO's total-samples field
    zeroed ("unknown", as streaming encoders write it) so no header states the length."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(1 << 20, dtype=np.int16)
        for _ in range(3 * 3600 * 8000 // len(block)):
            f.write(block)
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO is the first block
    # STREAMINFO starts at byte 8; the 64 bits at byte 18 end with the 36-bit sample count.
    word = struct.unpack_from(">Q", data, 18)[0]
    struct.pack_into(">Q", data, 18, word & ~((1 << 36) - 1))
    return bytes(data)


def _silence() -> bytes:
    return wav(S.silence(10.0, SR), SR)


def _near_silence() -> bytes:
    return wav(S.white_noise(10.0, SR, level_dbfs=-75.0), SR, "FLOAT")


def _white_noise() -> bytes:
    return wav(S.white_noise(10.0, SR, level_dbfs=-20.0), SR)


def _music() -> bytes:
    return wav(S.music(12.0, SR), SR)


def _tones() -> bytes:
    return wav(S.tones(10.0, SR, (440.0, 660.0)), SR)


def _noisy_speech() -> bytes:
    x, sr = speech_clip(12.0)
    return wav(S.add_noise(x, sr, snr_db=5.0), sr, "FLOAT")


def _clipped_speech() -> bytes:
    x, sr = speech_clip(8.0)
    return wav(S.clip(x / np.abs(x).max(), 8.0), sr)


def _clipped_speech_mp3() -> bytes:
    x, sr = speech_clip(8.0)
    return S.encode(S.clip(x / np.abs(x).max(), 8.0), sr, "mp3")


def _eight_channels() -> bytes:
    x, sr = speech_clip(5.0)
    return wav(np.repeat(x[:, None], 8, axis=1), sr)


def _six_channel_opus() -> bytes:
    x, sr = speech_clip(5.0, 48000)
    return S.encode(np.repeat(x[:, None], 6, axis=1), sr, "webm")


def _rate_384k() -> bytes:
    x, _ = speech_clip(4.0)
    return wav(x, 384_000)  # the samples are just reinterpreted: the header is the point


def _rate_4k() -> bytes:
    x, _ = speech_clip(5.0, 8000)
    return wav(x, 4000)


def _fragmented() -> bytes:
    """One-second bursts of speech ten seconds apart: speech, but no 3–10 s stretch of it."""
    x, sr = speech_clip(1.0)
    gap = S.silence(9.5, sr)
    return wav(np.concatenate([x, gap, x, gap, x, gap, x]), sr)


def _oversized() -> bytes:
    return b"RIFF" + bytes(50 * 1024 * 1024)


HOSTILE: list[tuple[str, Callable[[], bytes], RejectCode]] = [
    ("empty", lambda: b"", RejectCode.EMPTY_FILE),
    ("over_50MB", _oversized, RejectCode.FILE_TOO_LARGE),
    ("random_bytes_named_wav", _random_bytes, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("truncated_wav", _truncated_wav, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("wav_header_only", _header_only_wav, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("truncated_flac", _truncated_flac, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("html_page", _html, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("hls_playlist", _hls_playlist, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("png_image", _png, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("au_container", _au_container, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("video_without_audio", _video_without_audio, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("float_wav_with_nan", _nan_float_wav, RejectCode.UNSUPPORTED_AUDIO_FORMAT),
    ("one_second_of_speech", _one_second, RejectCode.AUDIO_TOO_SHORT),
    ("short_speech_padded_with_silence", _short_speech_in_silence, RejectCode.AUDIO_TOO_SHORT),
    ("thirty_minutes", _long_noise_wav, RejectCode.AUDIO_TOO_LONG),
    ("flac_bomb_3h_silence", _flac_bomb, RejectCode.AUDIO_TOO_LONG),
    ("digital_silence", _silence, RejectCode.REFERENCE_SILENT),
    ("noise_at_minus_75_dbfs", _near_silence, RejectCode.REFERENCE_SILENT),
    ("white_noise", _white_noise, RejectCode.REFERENCE_NOT_SPEECH),
    ("synthetic_music", _music, RejectCode.REFERENCE_NOT_SPEECH),
    ("pure_tones", _tones, RejectCode.REFERENCE_NOT_SPEECH),
    ("speech_at_5dB_snr", _noisy_speech, RejectCode.REFERENCE_TOO_NOISY),
    ("clipped_speech", _clipped_speech, RejectCode.REFERENCE_CLIPPED),
    ("clipped_speech_mp3", _clipped_speech_mp3, RejectCode.REFERENCE_CLIPPED),
    ("eight_channels", _eight_channels, RejectCode.TOO_MANY_CHANNELS),
    ("six_channel_opus_webm", _six_channel_opus, RejectCode.TOO_MANY_CHANNELS),
    ("rate_384kHz", _rate_384k, RejectCode.SAMPLE_RATE_UNSUPPORTED),
    ("rate_4kHz", _rate_4k, RejectCode.SAMPLE_RATE_UNSUPPORTED),
    ("speech_fragments_10s_apart", _fragmented, RejectCode.REFERENCE_FRAGMENTED),
]


@needs_speech
@needs_ffmpeg
@pytest.mark.parametrize("build,code", [(b, c) for _, b, c in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_upload_is_rejected_with_its_code(build: Callable[[], bytes], code: RejectCode) -> None:
    data = build()
    with pytest.raises(ReferenceRejected) as info:
        analyse_reference(data, ReferenceLimits())
    assert info.value.code == code, info.value.message
    assert info.value.code.value == code.value  # the str value is the API's stable code
    assert info.value.message


def test_every_code_has_a_hostile_case() -> None:
    assert {c for _, _, c in HOSTILE} == set(RejectCode)


def _peak_traced(fn: Callable[[], object]) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result: object
        try:
            result = fn()
        except ReferenceRejected as e:
            result = e
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_flac_bomb_decoding_is_bounded_in_time_and_memory() -> None:
    data = _flac_bomb()
    assert len(data) < 1_000_000  # 3 h of audio would be 173 MB of int16, 2 GB at 48 kHz f32
    t = time.perf_counter()
    peak, result = _peak_traced(lambda: analyse_reference(data))
    elapsed = time.perf_counter() - t
    assert isinstance(result, ReferenceRejected) and result.code == RejectCode.AUDIO_TOO_LONG
    # Holding the 300 s limit at 32 + 16 kHz float32 is 57.6 MB; 3 h would be over 2 GB.
    assert peak < 100 * 1024 * 1024, peak
    assert elapsed < 20.0


def test_thirty_minute_wav_is_refused_without_decoding_it() -> None:
    data = _long_noise_wav()
    peak, result = _peak_traced(lambda: analyse_reference(data))
    assert isinstance(result, ReferenceRejected) and result.code == RejectCode.AUDIO_TOO_LONG
    assert peak < 5 * 1024 * 1024, peak  # the 28.8 MB upload is not copied or decoded


@needs_speech
@needs_ffmpeg
def test_duration_limit_holds_while_decoding_a_stream_without_a_length() -> None:
    # WebM written to a pipe carries no duration, so only the decoding loop can stop it.
    x, sr = speech_clip(20.0, 48000)
    data = S.encode(x, sr, "webm")
    with pytest.raises(ReferenceRejected) as info:
        analyse_reference(data, ReferenceLimits(max_duration_s=8.0))
    assert info.value.code == RejectCode.AUDIO_TOO_LONG


def test_sink_stops_at_the_duration_limit_mid_stream() -> None:
    limits = ReferenceLimits(max_duration_s=1.0)
    sink = R._Sink(8000, 1, limits)
    sink.push(np.zeros((6000, 1), np.float32))
    with pytest.raises(ReferenceRejected) as info:
        sink.push(np.zeros((6000, 1), np.float32))
    assert info.value.code == RejectCode.AUDIO_TOO_LONG
    assert sink.frames == 6000  # the block that crossed the limit was not kept


def test_file_too_large_is_checked_before_decoding() -> None:
    x = np.zeros(16000 * 4, np.float32)
    with pytest.raises(ReferenceRejected) as info:
        analyse_reference(wav(x, 16000), ReferenceLimits(max_bytes=1000))
    assert info.value.code == RejectCode.FILE_TOO_LARGE


# --- good uploads -----------------------------------------------------------------------------


def _assert_window_shapes(ref: R.ReferenceAudio, limits: ReferenceLimits) -> None:
    assert 1 <= len(ref.windows) <= limits.max_windows
    for w in ref.windows:
        assert w.audio_32k.dtype == np.float32 and w.audio_16k.dtype == np.float32
        assert w.audio_32k.ndim == 1 and w.audio_16k.ndim == 1
        assert len(w.audio_32k) == 2 * len(w.audio_16k)
        # The official loaders' own bounds: 48 000..160 000 samples at 16 kHz.
        assert 48_000 <= len(w.audio_16k) <= 160_000
        assert w.end_s - w.start_s == pytest.approx(len(w.audio_16k) / 16000)
        assert ref.trim_start_s - 1e-9 <= w.start_s < w.end_s <= ref.trim_end_s + 1e-9
        offset = round((w.start_s - ref.trim_start_s) * 16000)
        np.testing.assert_array_equal(w.audio_16k, ref.audio_16k[offset : offset + len(w.audio_16k)])
        np.testing.assert_array_equal(
            w.audio_32k, ref.audio_32k[2 * offset : 2 * offset + len(w.audio_32k)]
        )
    spans = sorted((w.start_s, w.end_s) for w in ref.windows)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlap
    assert len(ref.audio_32k) == 2 * len(ref.audio_16k)


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


@needs_speech
def test_clean_five_seconds_is_one_window_trimmed_to_the_speech() -> None:
    x, sr = speech_clip(5.0)
    lead = S.silence(1.0, sr)
    ref = analyse_reference(wav(np.concatenate([lead, x, lead]), sr))
    limits = ReferenceLimits()
    _assert_window_shapes(ref, limits)
    assert len(ref.windows) == 1
    assert ref.source_channels == 1 and ref.source_sample_rate == sr
    assert ref.duration_s == pytest.approx(7.0, abs=1e-3)
    # The second of silence each side is trimmed (VAD padding keeps a few tens of ms).
    assert 0.8 <= ref.trim_start_s <= 1.1
    assert 5.5 <= ref.trim_end_s <= 6.2
    w = ref.windows[0]
    assert (w.start_s, w.end_s) == (ref.trim_start_s, ref.trim_end_s)
    assert ref.snr_db > 40 and ref.speech_ratio > 0.8 and ref.clipped_fraction == 0.0


@needs_speech
def test_sixty_seconds_gives_up_to_three_windows_cut_in_pauses() -> None:
    x, sr = speech_clip(60.0)
    ref = analyse_reference(S.encode(x, sr, "flac"))
    limits = ReferenceLimits()
    _assert_window_shapes(ref, limits)
    assert len(ref.windows) == 3  # a minute of clean read speech has three good stretches
    for w in ref.windows:
        assert 3.0 <= w.duration_s <= 10.0
        assert w.speech_ratio >= limits.min_window_speech_ratio
        # Cut in pauses: the first and last 20 ms are far quieter than the window.
        loud = _rms_db(w.audio_16k)
        assert _rms_db(w.audio_16k[:320]) < loud - 20
        assert _rms_db(w.audio_16k[-320:]) < loud - 20


@needs_speech
def test_stereo_44k1_is_downmixed_and_resampled() -> None:
    x, sr = speech_clip(6.0, 44100)
    stereo = np.stack([x, 0.5 * x], axis=1)  # [n, 2]
    ref = analyse_reference(wav(stereo, sr))
    _assert_window_shapes(ref, ReferenceLimits())
    assert ref.source_channels == 2 and ref.source_sample_rate == 44100
    assert ref.duration_s == pytest.approx(len(x) / 44100)
    # The downmix is the channel mean: 0.75 x. Compare levels of the 16 kHz result with the
    # source's over the trimmed span.
    a, b = round(ref.trim_start_s * 44100), round(ref.trim_end_s * 44100)
    assert _rms_db(ref.audio_16k) == pytest.approx(_rms_db(0.75 * x[a:b]), abs=0.3)


@needs_speech
def test_speech_in_one_stereo_channel_only_is_accepted() -> None:
    x, sr = speech_clip(6.0)
    ref = analyse_reference(wav(np.stack([x, np.zeros_like(x)], axis=1), sr))
    assert ref.source_channels == 2 and len(ref.windows) == 1


@needs_speech
def test_eight_channels_are_downmixed_when_the_limit_allows() -> None:
    x, sr = speech_clip(5.0)
    data = wav(np.repeat(x[:, None], 8, axis=1), sr)
    ref = analyse_reference(data, ReferenceLimits(max_channels=8))
    assert ref.source_channels == 8 and len(ref.windows) == 1


@needs_speech
@needs_ffmpeg
@pytest.mark.parametrize("fmt", ["mp3", "m4a", "aac", "webm", "opus", "ogg", "flac", "aiff"])
def test_compressed_and_other_containers_decode_by_content(fmt: str) -> None:
    x, sr = speech_clip(7.0)
    data = S.encode(x, sr, fmt)
    ref = analyse_reference(data)  # no name, no Content-Type: the bytes alone
    _assert_window_shapes(ref, ReferenceLimits())
    assert ref.duration_s == pytest.approx(7.0, abs=0.1)
    if fmt in ("mp3", "m4a", "aac", "webm"):
        assert ref.container.startswith("ffmpeg:")
    else:
        assert not ref.container.startswith("ffmpeg:")


@needs_speech
def test_telephone_rate_8khz_is_accepted() -> None:
    x, sr = speech_clip(6.0, 8000)
    ref = analyse_reference(wav(x, sr))
    assert ref.source_sample_rate == 8000
    assert len(ref.audio_16k) == pytest.approx((ref.trim_end_s - ref.trim_start_s) * 16000, abs=1)


@needs_speech
def test_mildly_noisy_speech_is_accepted_with_an_honest_snr() -> None:
    x, sr = speech_clip(12.0)
    ref = analyse_reference(wav(S.add_noise(x, sr, snr_db=25.0), sr, "FLOAT"))
    # The estimate is speech-frame power over pause-frame power; the mixture was made at 25 dB.
    assert ref.snr_db == pytest.approx(25.0, abs=3.0)


# --- pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 96000])
def test_streaming_resampler_keeps_frequency_level_and_length(sr: int) -> None:
    n = int(2.5 * sr)
    t = np.arange(n) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    sink = R._Sink(sr, 1, ReferenceLimits())
    for i in range(0, n, 3001):  # odd block size: boundaries must not matter
        sink.push(tone[i : i + 3001, None])
    a32, a16 = sink.finish()
    assert len(a16) == round(n * 16000 / sr) and len(a32) == 2 * len(a16)
    for a, rate in ((a32, 32000), (a16, 16000)):
        mid = a[rate // 4 : -rate // 4]  # away from the filter's edges
        spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid))))
        peak_hz = np.argmax(spectrum) * rate / len(mid)
        assert peak_hz == pytest.approx(1000.0, abs=2.0)
        assert np.sqrt(np.mean(mid.astype(np.float64) ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_clip_counter_counts_flat_tops_not_lone_peaks_across_blocks() -> None:
    limits = ReferenceLimits(clip_level=0.95, clip_min_run=3)
    sink = R._Sink(16000, 2, limits)
    x = np.zeros((100, 2), np.float32)
    x[10, 0] = 1.0  # a lone full-scale peak: not clipping
    x[20:22, 1] = -1.0  # a run of two: below the run length
    x[98:100, 0] = 1.0  # a run of five split 2 + 3 across the block boundary
    sink.push(x)
    y = np.zeros((100, 2), np.float32)
    y[0:3, 0] = 0.97
    sink.push(y)
    # A run of L >= 3 counts L - 2 samples: the five-run counts 3.
    assert sink.clipped == 3


def test_limits_from_dict_and_validation() -> None:
    limits = ReferenceLimits.from_dict({"max_channels": 8, "min_snr_db": 10})
    assert limits.max_channels == 8 and limits.min_snr_db == 10
    with pytest.raises(ValueError):
        ReferenceLimits.from_dict({"max_chanels": 8})
    with pytest.raises(ValueError):
        ReferenceLimits(window_min_s=5.0, window_max_s=4.0)


def test_riff_truncation_check_ignores_streaming_placeholders() -> None:
    x = np.zeros(1600, np.float32)
    data = bytearray(wav(x, 16000))
    assert not R._riff_data_truncated(bytes(data))
    assert R._riff_data_truncated(bytes(data[:-100]))
    pos = data.find(b"data")
    struct.pack_into("<I", data, pos + 4, 0xFFFFFFFF)
    assert not R._riff_data_truncated(bytes(data))


def test_vad_import_leaves_torch_thread_count_alone() -> None:
    # silero_vad sets torch's thread count to 1 when imported; a fresh interpreter is the only
    # place where that import happens for sure.
    code = (
        "import numpy as np, torch; torch.set_num_threads(3)\n"
        "from workers.sovits import reference as R\n"
        "R._vad_probs(np.zeros(16000, np.float32)); print(torch.get_num_threads())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "3"
