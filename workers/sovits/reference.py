"""Voice onboarding: turn an uploaded recording into clean 3–10 s reference windows, or reject it
with a stable code. Pure functions on bytes and numpy (no Celery, DB or storage here).

Pipeline, in the order the checks run (the first failing one names the error):

1. bytes: ``empty_file``, ``file_too_large`` (before anything is decoded).
2. decode by content, never by name or Content-Type: libsndfile first (WAV, WAVE_EXTENSIBLE,
   RF64, W64, AIFF, FLAC, Ogg Vorbis/Opus), then an ``ffprobe``/``ffmpeg`` subprocess for MP3,
   MP4/M4A, ADTS AAC, WebM/Matroska (and Ogg, FLAC or WAV variants libsndfile refused), with the
   demuxers and protocols allow-listed so a playlist or concat file cannot make ffmpeg read other
   files or the network. ``unsupported_audio_format`` for everything else, for corrupt or
   truncated files and non-finite samples; ``sample_rate_unsupported`` (default 8–192 kHz) and
   ``too_many_channels`` (default 2) are read from the header before any sample is decoded.
   Decoding is streamed block by block into a downmix + resampler, and stops as soon as the
   decoded length passes ``max_duration_s`` (``audio_too_long``): a header that lies or says
   nothing (an hours-long FLAC of digital silence is a few hundred kB) costs at most
   ``max_duration_s`` of decoding and ``max_duration_s`` of 32 kHz + 16 kHz mono in memory.
   Resampling: python-soxr (libsoxr) ``HQ`` streaming resamplers, native rate → 32 kHz and
   native rate → 16 kHz separately (no cascade); 16 kHz feeds the VAD and HuBERT, 32 kHz the
   SoVITS reference spectrogram.
3. ``audio_too_short`` (decoded < ``min_duration_s``), ``reference_silent`` (loudest 32 ms frame
   below ``silence_dbfs``).
4. Silero VAD 6 (ONNX model from its wheel, 32 ms frames at 16 kHz): ``reference_not_speech`` when
   speech frames are under ``min_speech_ratio`` of the audible frames (music, tones, noise).
5. ``reference_clipped``: fraction of samples (all channels, native rate, before any
   resampling smears the plateaus) that sit at ≥ ``clip_level`` of full scale in runs of at least
   ``clip_min_run`` samples; a lone full-scale peak is not clipping, a flat top is.
6. Trim to the first/last VAD segment; ``audio_too_short`` if under ``window_min_s`` remains.
7. ``reference_too_noisy``: SNR estimate in the trimmed region = mean power of VAD speech frames
   (minus noise) over the noise power, where noise power is the median power of the clearly
   non-speech frames (VAD probability below threshold − 0.15) when there are at least 0.25 s of
   them, else the 10th percentile of all frame powers (continuous speech: the quietest frames
   are the gaps between words). Assumes stationary noise; a noise bed under continuous speech is
   underestimated, which errs towards accepting.
8. Windows: the official model conditions on 3–10 s (its loaders refuse 16 kHz lengths outside
   48 000–160 000 samples). A trimmed upload of 3–10 s is one window. A longer one gets up to
   ``max_windows`` non-overlapping windows that start at a VAD segment start and end at a VAD
   segment end (so they cut in pauses), are at least ``min_window_speech_ratio`` speech, are not
   more clipped than the upload limit, and score best on ``speech density + min(SNR, 40 dB)/40 +
   min(duration, 8 s)/8 − 2·clipped fraction/max_clipped_fraction`` (the duration term because
   5–8 s references carry more voice than 3 s ones; the clipping term trades a handful of
   clipped peaks against length instead of forcing the shortest clean stretch).
   ``reference_fragmented`` if no stretch qualifies.

Windows carry both rates with identical boundaries (32 kHz indices are exactly twice the 16 kHz
ones) and their offsets in the decoded upload. The 0.3 s of zeros that the official pipeline
appends before HuBERT belongs to the feature extractor, not here.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Mapping

import numpy as np
import soundfile as sf
import soxr
import torch

__all__ = [
    "RejectCode",
    "ReferenceRejected",
    "ReferenceLimits",
    "ReferenceWindow",
    "ReferenceAudio",
    "analyse_reference",
    "RESAMPLER",
]

SR_32K = 32000
SR_16K = 16000
VAD_HOP = 512  # silero's frame at 16 kHz: 32 ms
RESAMPLER = "soxr HQ (python-soxr streaming)"

# Containers libsndfile may decode. Everything else it recognises (AU, VOC, NIST, MAT, PAF, ...)
# is refused: nobody records a voice in them, and each extra parser is attack surface.
_SF_CONTAINERS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "FLAC", "OGG"})
# libsndfile's MP3 support (mpg123) prints decoder complaints straight to stderr and trims no
# encoder delay; ffmpeg does both properly, so MP3 is handed over.
_SF_TO_FFMPEG = frozenset({"MP3"})
# ffmpeg demuxers (by their ffmpeg names) and decoders we let it use.
_FFMPEG_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,aac,flac,wav"
_FFMPEG_CODECS = frozenset({"aac", "mp3", "opus", "vorbis", "flac", "alac", "mp2"})
_UNKNOWN_LENGTH = 1 << 62  # libsndfile says SF_COUNT_MAX when a header leaves the length open
_ACTIVE_RANGE_DB = 45.0  # frames this far below the loudest one count as silence, not signal


class RejectCode(str, Enum):
    """Why an upload cannot be a reference voice. Values are the API's stable error codes."""

    EMPTY_FILE = "empty_file"
    """Zero bytes."""
    FILE_TOO_LARGE = "file_too_large"
    """More bytes than ``max_bytes``; nothing was decoded."""
    UNSUPPORTED_AUDIO_FORMAT = "unsupported_audio_format"
    """Not audio we decode: unknown or refused container/codec, corrupt, truncated, no samples."""
    AUDIO_TOO_SHORT = "audio_too_short"
    """Under ``min_duration_s`` decoded, or under ``window_min_s`` once silence is trimmed."""
    AUDIO_TOO_LONG = "audio_too_long"
    """Decodes to more than ``max_duration_s`` (decoding stops there)."""
    TOO_MANY_CHANNELS = "too_many_channels"
    """More than ``max_channels``: a surround mix has no single voice channel to downmix."""
    SAMPLE_RATE_UNSUPPORTED = "sample_rate_unsupported"
    """Sample rate outside ``min_sample_rate``..``max_sample_rate``."""
    REFERENCE_SILENT = "reference_silent"
    """Nothing louder than ``silence_dbfs``."""
    REFERENCE_NOT_SPEECH = "reference_not_speech"
    """Audible, but too little of it is speech (music, tones, noise)."""
    REFERENCE_TOO_NOISY = "reference_too_noisy"
    """Speech, but the estimated SNR is below ``min_snr_db``."""
    REFERENCE_CLIPPED = "reference_clipped"
    """More than ``max_clipped_fraction`` of the samples sit in flat full-scale runs."""
    REFERENCE_FRAGMENTED = "reference_fragmented"
    """Speech, but no 3–10 s stretch of it is dense enough to be a reference window."""


class ReferenceRejected(Exception):
    """The upload cannot be used; ``code`` is stable, ``message`` is for the user."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ReferenceLimits:
    max_bytes: int = 50 * 1024 * 1024
    min_duration_s: float = 3.0
    max_duration_s: float = 300.0
    max_channels: int = 2
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    silence_dbfs: float = -55.0
    vad_threshold: float = 0.5
    min_speech_ratio: float = 0.4
    min_snr_db: float = 15.0
    # 0.95 rather than 0.99: a lossy codec turns a flat clipped top into ripple around 1.0, and
    # runs at >= 0.99 then break up (measured: x4-clipped speech through MP3 64k scores 0.01–0.03%
    # at 0.99 but 0.4–0.65% at 0.95; tanh-saturated speech stays under 0.05%).
    clip_level: float = 0.95
    clip_min_run: int = 3
    max_clipped_fraction: float = 0.001
    window_min_s: float = 3.0
    window_max_s: float = 10.0
    max_windows: int = 3
    min_window_speech_ratio: float = 0.6
    decode_timeout_s: float = 60.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReferenceLimits":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ReferenceLimits keys: {sorted(unknown)}")
        return cls(**dict(d))

    def __post_init__(self) -> None:
        if not 0 < self.window_min_s < self.window_max_s:
            raise ValueError("need 0 < window_min_s < window_max_s")
        if self.clip_min_run < 1 or self.max_windows < 1 or self.max_channels < 1:
            raise ValueError("clip_min_run, max_windows and max_channels must be >= 1")


@dataclass(frozen=True)
class ReferenceWindow:
    """One reference clip. Offsets are seconds from the start of the decoded upload."""

    start_s: float
    end_s: float
    audio_32k: np.ndarray = field(repr=False)  # [n32] float32, n32 == 2 * n16
    audio_16k: np.ndarray = field(repr=False)  # [n16] float32, 48_000 <= n16 <= 160_000 by default
    speech_ratio: float
    snr_db: float

    @property
    def duration_s(self) -> float:
        return len(self.audio_16k) / SR_16K


@dataclass(frozen=True)
class ReferenceAudio:
    """An accepted upload: what it was, the trimmed speech (both rates) and its best windows."""

    container: str  # e.g. "WAV/PCM_16", "FLAC/PCM_24", "ffmpeg:mov,mp4,m4a,3gp,3g2,mj2/aac"
    source_sample_rate: int
    source_channels: int
    duration_s: float  # decoded, before trimming
    trim_start_s: float
    trim_end_s: float
    audio_32k: np.ndarray = field(repr=False)  # trimmed, [n32] float32
    audio_16k: np.ndarray = field(repr=False)  # trimmed, [n16] float32, n32 == 2 * n16
    speech_ratio: float  # VAD speech frames / audible frames, whole upload
    snr_db: float
    clipped_fraction: float
    windows: tuple[ReferenceWindow, ...]
    resampler: str = RESAMPLER


def analyse_reference(data: bytes, limits: ReferenceLimits | None = None) -> ReferenceAudio:
    """Validate an uploaded recording and cut its reference windows; raises ReferenceRejected."""
    limits = limits or ReferenceLimits()
    if len(data) == 0:
        raise ReferenceRejected(RejectCode.EMPTY_FILE, "the file is empty")
    if len(data) > limits.max_bytes:
        raise ReferenceRejected(
            RejectCode.FILE_TOO_LARGE,
            f"the file is {len(data)} bytes; the limit is {limits.max_bytes}",
        )
    dec = _decode(data if isinstance(data, bytes) else bytes(data), limits)
    a32, a16 = dec.audio_32k, dec.audio_16k

    duration_s = dec.frames / dec.sample_rate
    if duration_s < limits.min_duration_s:
        raise ReferenceRejected(
            RejectCode.AUDIO_TOO_SHORT,
            f"{duration_s:.2f} s of audio; at least {limits.min_duration_s:g} s is needed",
        )

    power = _frame_power(a16)  # [f] mean square per 32 ms frame
    level_db = 10.0 * np.log10(power + 1e-20)
    loudest = float(level_db.max())
    if loudest < limits.silence_dbfs:
        raise ReferenceRejected(
            RejectCode.REFERENCE_SILENT,
            f"the loudest moment is {max(loudest, -120.0):.0f} dBFS; nothing is audible",
        )

    probs = _vad_probs(a16)[: len(power)]  # [f]
    speech = probs >= limits.vad_threshold
    audible = level_db > max(limits.silence_dbfs, loudest - _ACTIVE_RANGE_DB)
    speech_ratio = float((speech & audible).sum()) / max(1, int(audible.sum()))
    segments = _speech_segments(probs, len(a16), limits)
    if not segments or speech_ratio < limits.min_speech_ratio:
        raise ReferenceRejected(
            RejectCode.REFERENCE_NOT_SPEECH,
            f"only {speech_ratio:.0%} of the audible audio is speech",
        )

    clipped_fraction = dec.clipped / max(1, dec.frames * dec.channels)
    if clipped_fraction > limits.max_clipped_fraction:
        raise ReferenceRejected(
            RejectCode.REFERENCE_CLIPPED,
            f"{clipped_fraction:.2%} of the samples are clipped at full scale",
        )

    t0, t1 = segments[0][0], segments[-1][1]  # 16 kHz samples
    if t1 - t0 < _min_len16(limits):
        raise ReferenceRejected(
            RejectCode.AUDIO_TOO_SHORT,
            f"{(t1 - t0) / SR_16K:.2f} s of speech once silence is trimmed; "
            f"at least {limits.window_min_s:g} s is needed",
        )

    f0, f1 = t0 // VAD_HOP, -(-t1 // VAD_HOP)
    noise = _noise_power(power[f0:f1], probs[f0:f1], limits.vad_threshold)
    snr = _snr_db(power[f0:f1][speech[f0:f1]], noise)
    if snr < limits.min_snr_db:
        raise ReferenceRejected(
            RejectCode.REFERENCE_TOO_NOISY,
            f"estimated SNR {snr:.1f} dB; at least {limits.min_snr_db:g} dB is needed",
        )

    windows = _pick_windows(
        segments, a32, a16, power, speech, noise, dec.clip_bins, dec.sample_rate, limits
    )
    if not windows:
        raise ReferenceRejected(
            RejectCode.REFERENCE_FRAGMENTED,
            f"no {limits.window_min_s:g}–{limits.window_max_s:g} s stretch is mostly speech",
        )
    return ReferenceAudio(
        container=dec.container,
        source_sample_rate=dec.sample_rate,
        source_channels=dec.channels,
        duration_s=duration_s,
        trim_start_s=t0 / SR_16K,
        trim_end_s=t1 / SR_16K,
        audio_32k=a32[2 * t0 : 2 * t1].copy(),
        audio_16k=a16[t0:t1].copy(),
        speech_ratio=speech_ratio,
        snr_db=snr,
        clipped_fraction=clipped_fraction,
        windows=tuple(windows),
    )


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass
class _Decoded:
    container: str
    sample_rate: int
    channels: int
    frames: int
    clipped: int
    clip_bins: np.ndarray  # [t] clipped sample instants per 10 ms of the upload
    audio_32k: np.ndarray
    audio_16k: np.ndarray


class _Sink:
    """Takes native-rate blocks [n, channels]; counts clipping, downmixes, resamples, and refuses
    to hold more than the duration limit."""

    def __init__(self, sample_rate: int, channels: int, limits: ReferenceLimits) -> None:
        self.sr = sample_rate
        self.channels = channels
        self.limits = limits
        self.max_frames = int(limits.max_duration_s * sample_rate)
        self.frames = 0
        self.clipped = 0
        self.clip_bins = np.zeros(int(limits.max_duration_s * 100) + 2, dtype=np.int64)
        self._tail = np.zeros((limits.clip_min_run - 1, channels), dtype=bool)
        self._r32 = soxr.ResampleStream(sample_rate, SR_32K, 1, dtype="float32", quality="HQ")
        self._r16 = soxr.ResampleStream(sample_rate, SR_16K, 1, dtype="float32", quality="HQ")
        self._out32: list[np.ndarray] = []
        self._out16: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        n = len(block)
        if n == 0:
            return
        if self.frames + n > self.max_frames:
            raise ReferenceRejected(
                RejectCode.AUDIO_TOO_LONG,
                f"longer than {self.limits.max_duration_s:g} s (decoding stopped there)",
            )
        if not np.isfinite(block).all():
            raise ReferenceRejected(
                RejectCode.UNSUPPORTED_AUDIO_FORMAT, "the file contains non-finite samples"
            )
        self._count_clipping(block)
        # Float files may exceed full scale; clamp so one wild sample cannot dominate the levels.
        mono = np.clip(block.mean(axis=1, dtype=np.float32), -1.0, 1.0)  # [n]
        self._out32.append(self._r32.resample_chunk(mono))
        self._out16.append(self._r16.resample_chunk(mono))
        self.frames += n

    def _count_clipping(self, block: np.ndarray) -> None:
        run = self.limits.clip_min_run
        hot = np.abs(block) >= self.limits.clip_level  # [n, ch]
        ext = np.concatenate([self._tail, hot])  # [n + run - 1, ch]
        n = len(block)
        # A sample counts when it and the run-1 before it are all hot: a run of L >= run samples
        # contributes L - run + 1, a lone peak nothing.
        flat = ext[run - 1 :].copy()
        for k in range(1, run):
            flat &= ext[run - 1 - k : run - 1 - k + n]
        self._tail = ext[len(ext) - (run - 1) :]
        count = int(flat.sum())
        if count:
            self.clipped += count
            where = np.nonzero(flat.any(axis=1))[0] + self.frames  # [k] sample instants
            bins = np.minimum(where * 100 // self.sr, len(self.clip_bins) - 1)
            np.add.at(self.clip_bins, bins, 1)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, dtype=np.float32)
        self._out32.append(self._r32.resample_chunk(empty, last=True))
        self._out16.append(self._r16.resample_chunk(empty, last=True))
        a32 = np.concatenate(self._out32).astype(np.float32, copy=False)
        a16 = np.concatenate(self._out16).astype(np.float32, copy=False)
        self._out32, self._out16 = [], []
        # Pin n32 == 2 * n16 exactly (the resamplers round independently by at most a sample),
        # so one set of 16 kHz cut points serves both rates.
        n16 = int(round(self.frames * SR_16K / self.sr))
        return _fit(a32, 2 * n16), _fit(a16, n16)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def _reject_format(message: str) -> ReferenceRejected:
    return ReferenceRejected(RejectCode.UNSUPPORTED_AUDIO_FORMAT, message)


def _check_stream(sample_rate: int, channels: int, limits: ReferenceLimits) -> None:
    if channels < 1:
        raise _reject_format("the audio stream has no channels")
    if channels > limits.max_channels:
        raise ReferenceRejected(
            RejectCode.TOO_MANY_CHANNELS,
            f"{channels} channels; upload mono or stereo (at most {limits.max_channels})",
        )
    if not limits.min_sample_rate <= sample_rate <= limits.max_sample_rate:
        raise ReferenceRejected(
            RejectCode.SAMPLE_RATE_UNSUPPORTED,
            f"{sample_rate} Hz; supported {limits.min_sample_rate}–{limits.max_sample_rate} Hz",
        )


def _decode(data: bytes, limits: ReferenceLimits) -> _Decoded:
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        return _decode_ffmpeg(data, limits)
    with handle:
        if handle.format not in _SF_TO_FFMPEG:
            return _decode_soundfile(handle, data, limits)
    return _decode_ffmpeg(data, limits)


def _decode_soundfile(f: sf.SoundFile, data: bytes, limits: ReferenceLimits) -> _Decoded:
    container = f"{f.format}/{f.subtype}"
    if f.format not in _SF_CONTAINERS:
        raise _reject_format(
            f"{f.format} files are not accepted; use WAV, FLAC, MP3, OGG, M4A or WebM"
        )
    _check_stream(f.samplerate, f.channels, limits)
    declared = f.frames if 0 < f.frames < _UNKNOWN_LENGTH else None
    if declared is not None and declared > limits.max_duration_s * f.samplerate:
        raise ReferenceRejected(
            RejectCode.AUDIO_TOO_LONG,
            f"{declared / f.samplerate:.0f} s long; the limit is {limits.max_duration_s:g} s",
        )
    if f.format in ("WAV", "WAVEX") and _riff_data_truncated(data):
        raise _reject_format("the WAV file is truncated (its data chunk is cut short)")
    sink = _Sink(f.samplerate, f.channels, limits)
    try:
        for block in f.blocks(blocksize=1 << 15, dtype="float32", always_2d=True):
            sink.push(block)
    except sf.LibsndfileError as e:
        raise _reject_format(f"the {f.format} stream is corrupt or truncated") from e
    # FLAC states its length in STREAMINFO; decoding less means bytes are missing at the end.
    if f.format == "FLAC" and declared is not None and sink.frames < declared:
        raise _reject_format("the FLAC file is truncated")
    return _finish(sink, container)


def _finish(sink: _Sink, container: str) -> _Decoded:
    if sink.frames == 0:
        raise _reject_format("the file contains no audio samples")
    a32, a16 = sink.finish()
    return _Decoded(
        container=container,
        sample_rate=sink.sr,
        channels=sink.channels,
        frames=sink.frames,
        clipped=sink.clipped,
        clip_bins=sink.clip_bins,
        audio_32k=a32,
        audio_16k=a16,
    )


def _riff_data_truncated(data: bytes) -> bool:
    """True when a RIFF/WAVE data chunk declares more bytes than the file holds. libsndfile
    silently shortens such files; an upload cut off mid-transfer should be refused instead.
    Streaming writers' placeholder sizes (0 and 0xFFFFFFFF) are not truncation."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if cid == b"data":
            return size not in (0, 0xFFFFFFFF) and pos + 8 + size > len(data)
        pos += 8 + size + (size & 1)
    return False


def _decode_ffmpeg(data: bytes, limits: ReferenceLimits) -> _Decoded:
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        # A deployment fault, not the user's: do not blame their file.
        raise RuntimeError("ffmpeg/ffprobe not found on PATH; install Debian package ffmpeg")
    with tempfile.TemporaryDirectory(prefix="voxmill-ref-") as tmp:
        path = os.path.join(tmp, "upload")  # no extension: the content decides
        with open(path, "wb") as out:
            out.write(data)
        stream, fmt, duration = _ffprobe(path, limits)
        sr, ch = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
        codec = str(stream.get("codec_name", ""))
        if codec not in _FFMPEG_CODECS and not codec.startswith("pcm_"):
            raise _reject_format(f"the {codec or 'unknown'} codec is not accepted")
        if sr <= 0:
            raise _reject_format("the audio stream has no sample rate")
        _check_stream(sr, ch, limits)
        if duration is not None and duration > limits.max_duration_s + 1.0:
            raise ReferenceRejected(
                RejectCode.AUDIO_TOO_LONG,
                f"{duration:.0f} s long; the limit is {limits.max_duration_s:g} s",
            )
        sink = _Sink(sr, ch, limits)
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-threads", "1",
            "-protocol_whitelist", "file", "-format_whitelist", _FFMPEG_DEMUXERS,
            "-i", path, "-map", "0:a:0", "-vn", "-sn", "-dn",
            # Never ask for more than a little past the limit: the sink then sees "too long"
            # without ffmpeg decoding the rest of an hours-long file.
            "-t", f"{limits.max_duration_s + 0.5:.3f}",
            "-ac", str(ch), "-ar", str(sr), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        _run_streaming(cmd, tmp, sink, ch, limits.decode_timeout_s)
        return _finish(sink, f"ffmpeg:{fmt}/{codec}")


def _ffprobe(path: str, limits: ReferenceLimits) -> tuple[dict[str, Any], str, float | None]:
    cmd = [
        "ffprobe", "-v", "error",
        "-protocol_whitelist", "file", "-format_whitelist", _FFMPEG_DEMUXERS,
        "-show_entries",
        "format=format_name,duration:stream=index,codec_type,codec_name,sample_rate,channels",
        "-of", "json", path,
    ]  # fmt: skip
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=limits.decode_timeout_s)
    except subprocess.TimeoutExpired as e:
        raise _reject_format("the file could not be read in time") from e
    if res.returncode != 0:
        raise _reject_format("not a recognised audio file (WAV, FLAC, MP3, OGG, M4A, WebM)")
    try:
        info = json.loads(res.stdout or b"{}")
    except json.JSONDecodeError as e:
        raise _reject_format("not a recognised audio file") from e
    fmt = str(info.get("format", {}).get("format_name", "unknown"))
    audio = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        raise _reject_format("the file has no audio stream")
    try:
        duration: float | None = float(info["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        duration = None
    return audio[0], fmt, duration


def _run_streaming(cmd: list[str], tmp: str, sink: _Sink, channels: int, timeout_s: float) -> None:
    frame_bytes = 4 * channels
    block_bytes = frame_bytes * max(1, sink.sr // 4)  # a quarter second per read
    with open(os.path.join(tmp, "stderr"), "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, _kill)
        timer.start()
        try:
            assert proc.stdout is not None
            carry = b""
            while True:
                chunk = proc.stdout.read(block_bytes)
                if not chunk:
                    break
                buf = carry + chunk
                usable = len(buf) - len(buf) % frame_bytes
                carry = buf[usable:]
                block = np.frombuffer(buf[:usable], dtype="<f4").reshape(-1, channels)
                sink.push(block)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    if timed_out.is_set():
        raise _reject_format("decoding took too long")
    if rc != 0:
        raise _reject_format("the audio stream is corrupt")


# --------------------------------------------------------------------------------------------
# Levels, VAD, SNR


def _frame_power(a16: np.ndarray) -> np.ndarray:
    n = -(-len(a16) // VAD_HOP)
    padded = np.zeros(n * VAD_HOP, dtype=np.float64)
    padded[: len(a16)] = a16
    return (padded.reshape(n, VAD_HOP) ** 2).mean(axis=1)  # [f]


_vad_local = threading.local()


def _vad_model() -> Any:
    model = getattr(_vad_local, "model", None)
    if model is None:
        threads = torch.get_num_threads()
        try:
            # silero_vad calls torch.set_num_threads(1) at import; keep the host's setting.
            from silero_vad import load_silero_vad
        finally:
            torch.set_num_threads(threads)
        # The ONNX model gives the same probabilities as the JIT one at about twice the speed on
        # CPU, with one intra-op thread. It keeps recurrent state, hence one per thread.
        model = load_silero_vad(onnx=True)
        _vad_local.model = model
    return model


def _vad_probs(a16: np.ndarray) -> np.ndarray:
    model = _vad_model()
    with torch.inference_mode():
        probs = model.audio_forward(torch.from_numpy(a16).float()[None], SR_16K)  # [1, f]
    return probs[0].numpy().astype(np.float64)


def _speech_segments(probs: np.ndarray, n16: int, limits: ReferenceLimits) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps_from_probs

    stamps = get_speech_timestamps_from_probs(
        probs.tolist(),
        sampling_rate=SR_16K,
        threshold=limits.vad_threshold,
        min_speech_duration_ms=250,
        # Short pauses still end a segment: every pause is a place a window may cut.
        min_silence_duration_ms=100,
        speech_pad_ms=60,
        # Longer stretches are split at their longest internal pause, so a window always fits.
        max_speech_duration_s=limits.window_max_s,
        audio_length_samples=n16,
    )
    return [(int(s["start"]), min(n16, int(s["end"]))) for s in stamps]


def _noise_power(power: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    quiet = power[probs < max(0.01, threshold - 0.15)]
    if len(quiet) * VAD_HOP >= 0.25 * SR_16K:
        return float(np.median(quiet))
    return float(np.percentile(power, 10))


def _snr_db(speech_power: np.ndarray, noise: float) -> float:
    if len(speech_power) == 0:
        return -math.inf
    signal = max(float(speech_power.mean()) - noise, 1e-12)
    return float(min(100.0, 10.0 * math.log10(signal / max(noise, 1e-12))))


# --------------------------------------------------------------------------------------------
# Windows


def _min_len16(limits: ReferenceLimits) -> int:
    return int(math.ceil(limits.window_min_s * SR_16K))


def _pick_windows(
    segments: list[tuple[int, int]],
    a32: np.ndarray,
    a16: np.ndarray,
    power: np.ndarray,
    speech: np.ndarray,
    noise: float,
    clip_bins: np.ndarray,
    source_rate: int,
    limits: ReferenceLimits,
) -> list[ReferenceWindow]:
    lo, hi = _min_len16(limits), int(math.floor(limits.window_max_s * SR_16K))
    t0, t1 = segments[0][0], segments[-1][1]
    sp_count = np.concatenate([[0], np.cumsum(speech)])  # prefix sums over 32 ms frames
    sp_power = np.concatenate([[0.0], np.cumsum(np.where(speech, power, 0.0))])
    clips = np.concatenate([[0], np.cumsum(clip_bins)])  # over 10 ms bins

    def stats(s: int, e: int) -> tuple[float, float, float]:
        f0, f1 = s // VAD_HOP, -(-e // VAD_HOP)
        n_sp = int(sp_count[f1] - sp_count[f0])
        density = n_sp / max(1, f1 - f0)
        snr = _snr_db(np.array([(sp_power[f1] - sp_power[f0]) / n_sp]), noise) if n_sp else -math.inf
        b0, b1 = min(len(clips) - 1, s // 160), min(len(clips) - 1, -(-e // 160))
        clipped = float(clips[b1] - clips[b0]) / max(1.0, (e - s) / SR_16K * source_rate)
        return density, snr, clipped

    def window(s: int, e: int) -> ReferenceWindow:
        density, snr, _ = stats(s, e)
        return ReferenceWindow(
            start_s=s / SR_16K,
            end_s=e / SR_16K,
            audio_32k=a32[2 * s : 2 * e].copy(),
            audio_16k=a16[s:e].copy(),
            speech_ratio=density,
            snr_db=snr,
        )

    if t1 - t0 <= hi:
        return [window(t0, t1)]

    candidates: list[tuple[float, int, int]] = []  # (score, start, end)
    for i, (s, _) in enumerate(segments):
        for _, e in segments[i:]:
            if e - s > hi:
                break
            if e - s < lo:
                continue
            density, snr, clipped = stats(s, e)
            if density < limits.min_window_speech_ratio or clipped > limits.max_clipped_fraction:
                continue
            score = (
                density
                + min(snr, 40.0) / 40.0
                + min((e - s) / SR_16K, 8.0) / 8.0
                - 2.0 * clipped / limits.max_clipped_fraction
            )
            candidates.append((score, s, e))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen: list[tuple[int, int]] = []
    for _, s, e in candidates:
        if all(e <= cs or s >= ce for cs, ce in chosen):
            chosen.append((s, e))
            if len(chosen) == limits.max_windows:
                break
    chosen.sort()
    return [window(s, e) for s, e in chosen]
