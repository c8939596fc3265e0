"""A deterministic stand-in engine for the lifecycle tests (never the product default).

Same text, voice and seed → same tokens and same waveform, so tests can assert idempotency
byte for byte. Options (``VOXMILL_ENGINE_OPTIONS_JSON``):
  gpt_delay_s / sovits_delay_s   sleep inside the stage (to kill a worker mid-task)
  calls_dir                      append one line per engine call to <calls_dir>/<stage>.log
  fail_text                      text containing this fails permanently in the gpt stage
  speech_wav                     path of a recording the sovits stage renders instead of tones
                                 (real speech, for loudness and quality-gate tests)
  gain_db_by_text                {substring: dB}: segments whose text contains it come out that
                                 much louder or quieter (renders at very different levels)
  noise_by_text                  {substring: SNR dB}: white noise added to those segments
  garbage_by_text                {substring: [seeds]}: renders of those segments with one of these
                                 seeds are white noise (what the quality gate must reject)
  cap_by_text                    {substring: [seeds]}: T2S of those segments with one of these
                                 seeds "never emits EOS": stop reason cap, tokens up to the guard
The sovits stage reads a segment's text back from its phones (ASCII text: phone = code point).
  hold_text / release_file       text containing hold_text waits in the gpt stage until
                                 release_file exists (at most hold_max_s, default 120 s)
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.engine import ReferenceClip, SemanticTokens, SynthesisParams, VoiceFeatures, Waveform
from jobs.errors import PermanentJobError
from jobs.settings import Settings
from workers.post.audio.quality import references_embedding

SAMPLE_RATE = 32000
SAMPLES_PER_TOKEN = 1280  # 25 Hz tokens at 32 kHz, as GPT-SoVITS
VERSION = "test-engine-1"


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _log_call(options: dict[str, Any], stage: str, text: str) -> None:
    calls_dir = options.get("calls_dir")
    if calls_dir:
        path = Path(calls_dir) / f"{stage}.log"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\t{text}\n")


def _hold(release_file: Path, max_s: float) -> None:
    deadline = time.monotonic() + max_s
    while not release_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class TestSemanticEngine:
    model_version = VERSION

    def __init__(self, options: dict[str, Any], tag: str = "") -> None:
        self.options = options
        self.tag = tag  # a registered model's file checksum: another model, other tokens

    def text_to_semantic(
        self, text: str, language: str, voice: VoiceFeatures, params: SynthesisParams
    ) -> SemanticTokens:
        _log_call(self.options, "gpt", text)
        if self.options.get("fail_text") and self.options["fail_text"] in text:
            raise PermanentJobError("the test engine refuses this text", code="unspeakable_text")
        time.sleep(float(self.options.get("gpt_delay_s", 0)))
        if self.options.get("hold_text") and self.options["hold_text"] in text:
            _hold(Path(self.options["release_file"]), float(self.options.get("hold_max_s", 120)))
        rng = np.random.default_rng(_seed(text, params.seed, voice.prompt_text, *([self.tag] if self.tag else [])))
        count = max(4, len(text) // 3)
        phones = np.array([ord(c) % 732 for c in text], dtype=np.int64)
        capped_seeds = _matching(self.options.get("cap_by_text"), text)
        if capped_seeds is not None and params.seed in capped_seeds:
            # What the product's runaway guard leaves of a model that never stops: 6 per phone + 75.
            count = 6 * len(phones) + 75
            return SemanticTokens(rng.integers(0, 1024, count, dtype=np.int64), phones, stop_reason="cap")
        return SemanticTokens(tokens=rng.integers(0, 1024, count, dtype=np.int64), phones=phones, stop_reason="eos")


@functools.cache
def _recording(path: str) -> np.ndarray:
    import soundfile

    from workers.post.audio.resample import resample

    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return np.asarray(resample(samples.mean(axis=1), int(rate), SAMPLE_RATE), np.float32)


def _matching(table: dict[str, Any] | None, text: str) -> Any:
    for needle, value in (table or {}).items():
        if needle in text:
            return value
    return None


def _white_noise(count: int, rms: float, *seed: Any) -> np.ndarray:
    return np.random.default_rng(_seed(*seed)).normal(0.0, rms, count).astype(np.float32)


class TestAcousticEngine:
    model_version = VERSION

    def __init__(self, options: dict[str, Any], tag: str = "") -> None:
        self.options = options
        self.tag = tag  # a registered model's file checksum: another model, another pitch

    def synthesize(self, semantic: SemanticTokens, voice: VoiceFeatures, params: SynthesisParams) -> Waveform:
        _log_call(self.options, "sovits", ",".join(map(str, semantic.tokens[:4])))
        time.sleep(float(self.options.get("sovits_delay_s", 0)))
        text = "".join(chr(int(p)) for p in semantic.phones)
        if self.options.get("speech_wav"):
            samples = _recording(str(self.options["speech_wav"])).copy()
        else:
            base = 110.0 + 40.0 * float(voice.style[0]) + (int(self.tag[:2], 16) % 32 if self.tag else 0)
            t = np.arange(SAMPLES_PER_TOKEN) / SAMPLE_RATE
            pieces = [
                0.3 * np.sin(2 * np.pi * (base + 3.0 * (token % 64)) * t) * np.hanning(SAMPLES_PER_TOKEN)
                for token in semantic.tokens
            ]
            samples = np.concatenate(pieces).astype(np.float32)
        rms = float(np.sqrt(np.mean(samples**2)))
        garbage_seeds = _matching(self.options.get("garbage_by_text"), text)
        if garbage_seeds is not None and params.seed in garbage_seeds:
            samples = _white_noise(len(samples), rms, "garbage", text, params.seed)
        snr_db = _matching(self.options.get("noise_by_text"), text)
        if snr_db is not None:
            samples = samples + _white_noise(len(samples), rms * 10 ** (-float(snr_db) / 20), "noise", text)
        gain_db = _matching(self.options.get("gain_db_by_text"), text)
        if gain_db is not None:
            samples = samples * np.float32(10 ** (float(gain_db) / 20))
        return Waveform(samples.astype(np.float32), SAMPLE_RATE)


class TestVoiceEncoder:
    model_version = VERSION

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def encode(self, references: list[ReferenceClip], transcript: str | None, language: str) -> VoiceFeatures:
        samples = np.concatenate([r.audio_32k for r in references])
        rms = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        rng = np.random.default_rng(_seed(rms, len(samples)))
        try:  # the product's d-vector: the quality gate compares renders against it
            embedding: np.ndarray | None = references_embedding([r.audio_16k for r in references])
        except ValueError:
            embedding = None
        return VoiceFeatures(
            prompt_text=transcript,
            prompt_language=language,
            prompt_semantic=rng.integers(0, 1024, 50, dtype=np.int64) if transcript else None,
            style=np.array([rms, len(samples) / 1e6], dtype=np.float32),
            speaker_embedding=embedding,
        )


def model_version(settings: Settings) -> str:
    return VERSION


def create_semantic_engine(settings: Settings) -> TestSemanticEngine:
    return TestSemanticEngine(settings.engine_options)


def create_acoustic_engine(settings: Settings) -> TestAcousticEngine:
    return TestAcousticEngine(settings.engine_options)


def create_voice_encoder(settings: Settings) -> TestVoiceEncoder:
    return TestVoiceEncoder(settings.engine_options)


# Registered models (jobs.model_cache): the files are checked (sha256) before these are called;
# the stand-in reads only their checksum, so each model renders differently.


def _file_tag(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def create_semantic_engine_for(settings: Settings, gpt_path: Path, version: str) -> TestSemanticEngine:
    engine = TestSemanticEngine(settings.engine_options, _file_tag(gpt_path))
    engine.model_version = version
    return engine


def create_acoustic_engine_for(settings: Settings, sovits_path: Path, version: str) -> TestAcousticEngine:
    engine = TestAcousticEngine(settings.engine_options, _file_tag(sovits_path))
    engine.model_version = version
    return engine


def create_voice_encoder_for(settings: Settings, acoustic: TestAcousticEngine) -> TestVoiceEncoder:
    encoder = TestVoiceEncoder(settings.engine_options)
    encoder.model_version = acoustic.model_version
    return encoder
