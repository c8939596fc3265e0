"""The engine interface the stage tasks call, and the small typed payloads that travel between
stages (through storage, never through the broker):

    gpt:    text + VoiceFeatures            → SemanticTokens   (SemanticEngine)
    sovits: SemanticTokens + VoiceFeatures  → Waveform         (AcousticEngine)
    voice:  ReferenceClips + transcript     → VoiceFeatures    (VoiceEncoder, on the sovits queue)

The product engine is GPT-SoVITS (``workers.gpt.engine`` / ``workers.sovits.engine``); any
module that provides the three ``create_*`` factories can stand in (the tests use one)."""

from __future__ import annotations

import importlib
import io
from dataclasses import asdict, dataclass, field, fields
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from jobs.settings import Settings

PRODUCT_ENGINE = "gpt-sovits"
_PRODUCT_MODULES = {
    "semantic": "workers.gpt.engine",
    "acoustic": "workers.sovits.engine",
    "voice": "workers.sovits.engine",
}


@dataclass(frozen=True)
class SynthesisParams:
    """Everything a client may set that changes the audio; all of it enters the content key."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    speed: float = 1.0
    noise_scale: float = 0.5
    seed: int = 0
    loudness_preset: str = "voice_over"  # voice_over (−16 LUFS), ebu_r128 (−23 LUFS), acx
    loudness_lufs: float | None = None  # overrides the preset's level
    true_peak_dbtp: float | None = None  # overrides the preset's ceiling
    denoise: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SynthesisParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    # Typed loosely for numpy's stub, which matches **kwargs against savez's own allow_pickle.
    named: dict[str, Any] = dict(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **named)  # uncompressed: these are small and read often
    return buffer.getvalue()


def _npz_load(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@dataclass(frozen=True)
class VoiceFeatures:
    """What a voice contributes to every synthesis, computed once when it is onboarded."""

    prompt_text: str | None  # None: reference-free mode (no prompt tokens)
    prompt_language: str
    prompt_semantic: np.ndarray | None  # int64 [T] 25 Hz semantic tokens of the reference
    style: np.ndarray  # float32 [gin] style vector, averaged over the references (Pro: SV-fused)
    speaker_embedding: np.ndarray | None = None  # float32 [256] d-vector, for quality scores
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # float32 [clips, 20480] speaker-verification (ERes2NetV2) embeddings, one per reference
    # clip; v2Pro/v2ProPlus fuse them into ``style``. Model-independent, so kept to re-fuse.
    sv_embedding: np.ndarray | None = None

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "prompt_text": np.array(self.prompt_text or ""),
            "has_prompt_text": np.array(self.prompt_text is not None),
            "prompt_language": np.array(self.prompt_language),
            "style": np.asarray(self.style, dtype=np.float32),
        }
        if self.prompt_semantic is not None:
            arrays["prompt_semantic"] = np.asarray(self.prompt_semantic, dtype=np.int64)
        if self.speaker_embedding is not None:
            arrays["speaker_embedding"] = np.asarray(self.speaker_embedding, dtype=np.float32)
        if self.sv_embedding is not None:
            arrays["sv_embedding"] = np.asarray(self.sv_embedding, dtype=np.float32)
        arrays.update({f"extra_{k}": v for k, v in self.extra.items()})
        return _npz_bytes(**arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "VoiceFeatures":
        a = _npz_load(data)
        return cls(
            prompt_text=str(a["prompt_text"]) if bool(a["has_prompt_text"]) else None,
            prompt_language=str(a["prompt_language"]),
            prompt_semantic=a.get("prompt_semantic"),
            style=a["style"],
            speaker_embedding=a.get("speaker_embedding"),
            sv_embedding=a.get("sv_embedding"),
            extra={k[len("extra_") :]: v for k, v in a.items() if k.startswith("extra_")},
        )


# How T2S generation ended: ``eos`` the model stopped by itself; ``cap`` it ran into the token
# cap (the runaway guard or the official step limit), the long-text repeat failure of GPT-SoVITS.
StopReason = Literal["eos", "cap"]
STOP_REASONS: tuple[StopReason, ...] = ("eos", "cap")


def stop_reason_of(value: object) -> StopReason | None:
    """A stored stop reason read back (None when absent or not one of ours)."""
    return "eos" if value == "eos" else "cap" if value == "cap" else None


@dataclass(frozen=True)
class SemanticTokens:
    """Output of the gpt stage: 25 Hz semantic tokens, the target phone ids they belong to, and
    how generation stopped (None: the engine does not say)."""

    tokens: np.ndarray  # int64 [T]
    phones: np.ndarray  # int64 [P]
    stop_reason: StopReason | None = None

    def to_bytes(self) -> bytes:
        arrays = {"tokens": np.asarray(self.tokens, np.int64), "phones": np.asarray(self.phones, np.int64)}
        if self.stop_reason is not None:
            arrays["stop_reason"] = np.array(self.stop_reason)
        return _npz_bytes(**arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> "SemanticTokens":
        a = _npz_load(data)
        stop = stop_reason_of(str(a["stop_reason"])) if "stop_reason" in a else None
        return cls(tokens=a["tokens"], phones=a["phones"], stop_reason=stop)


@dataclass(frozen=True)
class Waveform:
    """Mono float32 audio."""

    samples: np.ndarray  # float32 [S]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return float(len(self.samples)) / float(self.sample_rate)

    def to_wav_bytes(self) -> bytes:
        """32-bit float WAV: lossless between stages, readable by any tool."""
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.asarray(self.samples, np.float32), self.sample_rate, format="WAV", subtype="FLOAT")
        return buffer.getvalue()

    @classmethod
    def from_audio_bytes(cls, data: bytes) -> "Waveform":
        """Any format soundfile reads (WAV, FLAC, OGG); multichannel is averaged to mono."""
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return cls(samples=samples.mean(axis=1), sample_rate=int(rate))


@dataclass(frozen=True)
class ReferenceClip:
    """One 3–10 s window of a voice's reference recording, at the two rates the models read
    (32 kHz for the SoVITS spectrogram, 16 kHz for HuBERT), both resampled from the upload."""

    audio_32k: np.ndarray  # float32 [2n]
    audio_16k: np.ndarray  # float32 [n]

    @property
    def duration_s(self) -> float:
        return len(self.audio_16k) / 16000

    @staticmethod
    def pack(clips: list["ReferenceClip"]) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        for i, clip in enumerate(clips):
            arrays[f"clip{i}_32k"] = np.asarray(clip.audio_32k, np.float32)
            arrays[f"clip{i}_16k"] = np.asarray(clip.audio_16k, np.float32)
        return _npz_bytes(**arrays)

    @staticmethod
    def unpack(data: bytes) -> list["ReferenceClip"]:
        a = _npz_load(data)
        count = len(a) // 2
        return [ReferenceClip(a[f"clip{i}_32k"], a[f"clip{i}_16k"]) for i in range(count)]


class SemanticEngine(Protocol):
    """gpt stage: text → semantic tokens."""

    model_version: str

    def text_to_semantic(
        self, text: str, language: str, voice: VoiceFeatures, params: SynthesisParams
    ) -> SemanticTokens: ...


class AcousticEngine(Protocol):
    """sovits stage: semantic tokens → waveform in the voice."""

    model_version: str

    def synthesize(
        self, semantic: SemanticTokens, voice: VoiceFeatures, params: SynthesisParams
    ) -> Waveform: ...


class VoiceEncoder(Protocol):
    """Voice onboarding: reference audio (+ its transcript) → features."""

    model_version: str

    def encode(
        self, references: list[ReferenceClip], transcript: str | None, language: str
    ) -> VoiceFeatures:
        """``transcript`` is the text of ``references[0]`` (prompted mode) or None (reference-free)."""
        ...


def engine_module(settings: "Settings", role: str) -> ModuleType:
    """The module that provides the factory for ``role`` ("semantic", "acoustic", "voice")."""
    name = _PRODUCT_MODULES[role] if settings.engine == PRODUCT_ENGINE else settings.engine
    return importlib.import_module(name)


def create_semantic_engine(settings: "Settings") -> SemanticEngine:
    engine: SemanticEngine = engine_module(settings, "semantic").create_semantic_engine(settings)
    return engine


def create_acoustic_engine(settings: "Settings") -> AcousticEngine:
    engine: AcousticEngine = engine_module(settings, "acoustic").create_acoustic_engine(settings)
    return engine


def create_voice_encoder(settings: "Settings") -> VoiceEncoder:
    encoder: VoiceEncoder = engine_module(settings, "voice").create_voice_encoder(settings)
    return encoder


def model_version(settings: "Settings") -> str:
    """The version label that enters content keys; cheap (no model is loaded)."""
    version: str = engine_module(settings, "semantic").model_version(settings)
    return version


# Registered models (``jobs.models``): engines built for one model's files, kept by
# ``jobs.model_cache``. A stand-in engine module may provide these too; ``detect_generation``
# is a fact of the file format and falls back to the product's reader.


def detect_generation(settings: "Settings", gpt_path: "Path", sovits_path: "Path") -> str:
    """The GPT-SoVITS generation of a pair ("v1", "v2", "v2Pro", "v2ProPlus"), from its SoVITS
    file; raises for a file that is not a supported checkpoint of its kind."""
    module = engine_module(settings, "acoustic")
    detect = getattr(module, "detect_generation", None)
    if detect is None:
        detect = importlib.import_module(_PRODUCT_MODULES["acoustic"]).detect_generation
    generation: str = detect(gpt_path, sovits_path)
    return generation


def create_semantic_engine_for(settings: "Settings", gpt_path: "Path", version: str) -> SemanticEngine:
    engine: SemanticEngine = engine_module(settings, "semantic").create_semantic_engine_for(settings, gpt_path, version)
    return engine


def create_acoustic_engine_for(settings: "Settings", sovits_path: "Path", version: str) -> AcousticEngine:
    engine: AcousticEngine = engine_module(settings, "acoustic").create_acoustic_engine_for(
        settings, sovits_path, version
    )
    return engine


def create_voice_encoder_for(settings: "Settings", acoustic: AcousticEngine) -> VoiceEncoder:
    """The voice encoder of the model an acoustic engine holds (sharing its loaded weights)."""
    encoder: VoiceEncoder = engine_module(settings, "voice").create_voice_encoder_for(settings, acoustic)
    return encoder
