"""Encoders and decoders for delivered audio: WAV 16/24-bit and FLAC through soundfile
(libsndfile), MP3, Opus-in-Ogg and AAC-in-M4A through an ``ffmpeg`` subprocess.

ffmpeg runs with bit-exact flags so the same samples give the same bytes (objects are stored under
content-derived keys), reads raw float32 from stdin and writes to a temporary file (the MP4 muxer
needs a seekable output). Sample rates a codec cannot carry are refused up front rather than
silently resampled by ffmpeg; ``encode`` itself resamples with soxr to the rate asked for.
"""

from __future__ import annotations

import io
import shutil
from collections import Counter
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from workers.post.audio.meter import as_frames
from workers.post.audio.resample import resample

# Tests point this elsewhere to check the missing-binary error.
FFMPEG = "ffmpeg"
FFMPEG_TIMEOUT_S = 600.0
# Encodes done in this process, by format (``encode`` and ``chapters.encode_book``): the seam the
# book tests read to prove an unchanged rerun encodes nothing.
ENCODES: Counter[str] = Counter()
# ffmpeg's default AAC coder (two-loop) lets decoded true peaks overshoot the input by 1-6 dB at
# speech bitrates; the fast coder overshoots far less on the same input and sounds no worse on
# speech (measured in notes/README-delivery.md).
AAC_OPTIONS = ("-aac_coder", "fast")

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


class EncoderError(RuntimeError):
    """Encoding or decoding failed (missing ffmpeg, unsupported rate, codec error)."""


@dataclass(frozen=True)
class AudioFormat:
    name: str
    extension: str  # with the dot
    mime: str
    lossy: bool
    sample_rates: tuple[int, ...] | None  # None: any rate
    default_rate: int  # used when the source rate is not allowed
    default_bitrate: str | None = None  # ffmpeg ``-b:a``
    subtype: str | None = None  # soundfile subtype for PCM formats
    container: str | None = None  # soundfile format or ffmpeg muxer
    codec: str | None = None  # ffmpeg encoder

    def pick_rate(self, source_rate: int, target_rate: int | None) -> int:
        rate = target_rate if target_rate is not None else source_rate
        if self.sample_rates is None or rate in self.sample_rates:
            return rate
        if target_rate is None:
            return self.default_rate
        raise EncoderError(
            f"{self.name} cannot carry {rate} Hz; allowed: {', '.join(map(str, self.sample_rates))}"
        )


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav16", ".wav", "audio/wav", False, None, 48000, subtype="PCM_16",
                    container="WAV"),
        AudioFormat("wav24", ".wav", "audio/wav", False, None, 48000, subtype="PCM_24",
                    container="WAV"),
        AudioFormat("flac", ".flac", "audio/flac", False, None, 48000, subtype="PCM_16",
                    container="FLAC"),
        AudioFormat("flac24", ".flac", "audio/flac", False, None, 48000, subtype="PCM_24",
                    container="FLAC"),
        AudioFormat("mp3", ".mp3", "audio/mpeg", True, MP3_RATES, 44100, "128k",
                    container="mp3", codec="libmp3lame"),
        # Opus always runs at 48 kHz inside; RFC 7845 names the file .opus, type audio/ogg.
        AudioFormat("opus", ".opus", "audio/ogg", True, OPUS_RATES, 48000, "64k",
                    container="ogg", codec="libopus"),
        AudioFormat("m4a", ".m4a", "audio/mp4", True, AAC_RATES, 44100, "128k",
                    container="ipod", codec="aac"),
    )
}
ALIASES = {"wav": "wav16", "aac": "m4a", "ogg": "opus"}


def get_format(name: str) -> AudioFormat:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        known = sorted(set(FORMATS) | set(ALIASES))
        raise EncoderError(f"unknown audio format {name!r}; known: {', '.join(known)}")
    return FORMATS[key]


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> None:
    binary = shutil.which(FFMPEG)
    if binary is None:
        raise EncoderError(
            f"{FFMPEG!r} not found on PATH: MP3/Opus/M4A need ffmpeg "
            "(Debian: apt-get install ffmpeg)"
        )
    cmd = [binary, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise EncoderError(f"ffmpeg timed out after {FFMPEG_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise EncoderError(f"ffmpeg exited {proc.returncode}: {message}")


def encode(
    samples: np.ndarray,
    sample_rate: int,
    fmt: str,
    target_rate: int | None = None,
    *,
    bitrate: str | None = None,
) -> bytes:
    """Encode ``[n]`` / ``[n, ch]`` float audio to ``fmt`` at ``target_rate`` (default: the source
    rate when the codec allows it, else the format's default rate)."""
    spec = get_format(fmt)
    rate = spec.pick_rate(sample_rate, target_rate)
    x = as_frames(resample(samples, sample_rate, rate)).astype(np.float32)  # [n, ch]
    ENCODES[spec.name] += 1
    if spec.codec is None:
        buf = io.BytesIO()
        # libsndfile does not clip on float→int conversion; a stray overshoot would wrap.
        sf.write(buf, np.clip(x, -1.0, 1.0), rate, subtype=spec.subtype, format=spec.container)
        return buf.getvalue()
    args = [
        "-f", "f32le", "-ar", str(rate), "-ac", str(x.shape[1]), "-i", "pipe:0",
        "-c:a", spec.codec, "-b:a", bitrate or spec.default_bitrate or "128k",
        "-ar", str(rate), "-map_metadata", "-1",
        "-fflags", "+bitexact", "-flags:a", "+bitexact",
    ]
    if spec.codec == "aac":
        args += AAC_OPTIONS
    if spec.container == "ipod":
        args += ["-movflags", "+faststart"]
    with tempfile.TemporaryDirectory(prefix="voxmill-enc-") as tmp:
        out = Path(tmp) / f"out{spec.extension}"
        _ffmpeg([*args, "-f", spec.container or "", str(out)], stdin=x.tobytes())
        return out.read_bytes()


def decode(data: bytes, fmt: str | None = None) -> tuple[np.ndarray, int]:
    """Decode to float32 ``[n]`` (mono) or ``[n, ch]`` and its sample rate.

    WAV/FLAC are read by soundfile; anything else (or an unknown ``fmt``) goes through ffmpeg.
    """
    spec = get_format(fmt) if fmt is not None else None
    if spec is None or spec.codec is None:
        try:
            x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            return (x[:, 0] if x.shape[1] == 1 else x), int(rate)
        except sf.LibsndfileError:
            if spec is not None:
                raise EncoderError(f"could not decode {spec.name} data") from None
    suffix = spec.extension if spec is not None else ".bin"
    with tempfile.TemporaryDirectory(prefix="voxmill-dec-") as tmp:
        src = Path(tmp) / f"in{suffix}"
        dst = Path(tmp) / "out.wav"
        src.write_bytes(data)
        _ffmpeg(["-i", str(src), "-c:a", "pcm_f32le", "-f", "wav", str(dst)])
        x, rate = sf.read(dst, dtype="float32", always_2d=True)
    return (x[:, 0] if x.shape[1] == 1 else x), int(rate)
