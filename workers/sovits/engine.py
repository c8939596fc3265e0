"""The GPT-SoVITS acoustic engine and voice encoder behind the ``jobs.engine`` interface:
semantic tokens + a voice's stored features → 32 kHz waveform (torch or ONNX Runtime), and
reference clips → voice features (style vector over every clip, for v2Pro/v2ProPlus fused with
each clip's speaker-verification embedding; HuBERT prompt tokens of the first; resemblyzer
speaker embedding over every clip). Models are loaded once per process."""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from jobs.engine import ReferenceClip, SemanticTokens, SynthesisParams, VoiceFeatures, Waveform
from jobs.errors import PermanentJobError
from jobs.settings import Settings
from workers.assets import ModelPaths, model_version as assets_model_version
from workers.checkpoints import CheckpointError
from workers.sovits.model import HubertContent, SoVITSModel, SpeakerVerifier, prompt_semantic, reference_spectrogram

SAMPLE_RATE = 32000
log = logging.getLogger("voxmill.sovits")


def _dtype(settings: Settings) -> torch.dtype:
    return torch.float16 if settings.precision == "fp16" and settings.device.startswith("cuda") else torch.float32


@lru_cache(maxsize=4)
def _load_sovits(path: Path, device: str, dtype: torch.dtype) -> SoVITSModel:
    return SoVITSModel.load(path, device=device, dtype=dtype)


@lru_cache(maxsize=2)
def _load_hubert(path: Path, device: str, dtype: torch.dtype) -> HubertContent:
    return HubertContent.load(path, device=device, dtype=dtype)


def _checked(loader: object, *args: object) -> object:
    try:
        return loader(*args)  # type: ignore[operator]
    except (CheckpointError, OSError) as exc:
        raise PermanentJobError(str(exc), code="model_unavailable") from exc


def sovits_runtime(settings: Settings) -> str:
    """"onnx" or "torch": ONNX Runtime is faster on CPU and within 1e-4 of torch; GPU stays torch."""
    if settings.sovits_runtime != "auto":
        return settings.sovits_runtime
    return "onnx" if settings.device == "cpu" else "torch"


class GPTSoVITSAcoustic:
    def __init__(self, settings: Settings, sovits_path: Path | None = None, version: str | None = None) -> None:
        """The default model, or a registered model's SoVITS file (``sovits_path``), loaded
        outside the module cache so the model LRU decides its lifetime."""
        self.paths = ModelPaths.from_settings(settings)
        self.device = settings.device
        self.settings = settings
        if sovits_path is None:
            self.model: SoVITSModel = _checked(_load_sovits, self.paths.sovits, self.device, _dtype(settings))  # type: ignore[assignment]
        else:
            try:
                self.model = SoVITSModel.load(sovits_path, device=self.device, dtype=_dtype(settings))
            except (CheckpointError, OSError, ValueError, RuntimeError, EOFError) as exc:
                raise PermanentJobError(f"{sovits_path}: {exc}", code="model_corrupt") from exc
        self.model_version = version or assets_model_version(self.paths)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.onnx = None
        if sovits_runtime(settings) == "onnx":
            try:
                self.onnx = _onnx_decoder(self.model, settings.compiled_dir, self.model_version, self.device)
            except Exception:
                if settings.sovits_runtime == "onnx":  # asked for by name: fail loudly
                    raise
                log.exception("the ONNX SoVITS decoder could not be exported or loaded; decoding in torch")
        # torch's CPU kernels are thread-safe, but one model serving two threads at once only
        # halves each one's speed; a lock keeps a threads pool honest.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def synthesize(self, semantic: SemanticTokens, voice: VoiceFeatures, params: SynthesisParams) -> Waveform:
        if len(semantic.tokens) == 0:
            raise PermanentJobError("the gpt stage produced no semantic tokens", code="empty_semantic")
        codes = torch.as_tensor(semantic.tokens, dtype=torch.long).view(1, 1, -1)  # [1, 1, T]
        phones = torch.as_tensor(semantic.phones, dtype=torch.long).view(1, -1)  # [1, P]
        style = torch.as_tensor(voice.style, dtype=torch.float32).view(1, -1, 1)  # [1, gin, 1]
        gin = self.model.config.gin_channels
        if style.shape[1] != gin:
            raise PermanentJobError(
                f"the voice's style vector has {style.shape[1]} values; this {self.model.config.version} "
                f"model takes {gin}: encode the voice for this model",
                code="voice_model_mismatch",
            )
        generator = torch.Generator().manual_seed(params.seed)
        with self._lock:
            if self.onnx is not None and params.speed == 1.0:
                wav = self.onnx.decode(codes, phones, style, params.noise_scale, generator)
            else:
                wav = self.model.decode(
                    codes.to(self.model.device),
                    phones.to(self.model.device),
                    style.to(self.model.device),
                    noise_scale=params.noise_scale,
                    speed=params.speed,
                    generator=generator,
                )
        samples = wav[0, 0].float().cpu().numpy()
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > 1.0:  # the official inference rescales a waveform that overshoots full scale
            samples = samples / peak
        return Waveform(samples.astype(np.float32), SAMPLE_RATE)


def _onnx_decoder(model: SoVITSModel, folder: Path, version: str, device: str) -> object:
    from workers.sovits.model.onnx_decoder import OnnxDecoder, export_decoder

    target = folder / f"sovits-decoder-{version.replace(':', '-')}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: workers starting together never load half a file.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        export_decoder(model, partial)  # exports an fp32 CPU copy; the model stays as it is
        os.replace(partial, target)
    return OnnxDecoder(target, device=device)


class GPTSoVITSVoiceEncoder:
    def __init__(self, settings: Settings, acoustic: GPTSoVITSAcoustic | None = None) -> None:
        """The default model's encoder, or the one of the model ``acoustic`` holds (its loaded
        SoVITS weights are shared, not loaded twice)."""
        self.paths = ModelPaths.from_settings(settings)
        dtype = _dtype(settings)
        if acoustic is None:
            self.model: SoVITSModel = _checked(_load_sovits, self.paths.sovits, settings.device, dtype)  # type: ignore[assignment]
            self.model_version = assets_model_version(self.paths)
        else:
            self.model = acoustic.model
            self.model_version = acoustic.model_version
        self.hubert: HubertContent = _checked(_load_hubert, self.paths.hubert, settings.device, dtype)  # type: ignore[assignment]
        self.device = settings.device
        self._verifier: SpeakerVerifier | None = None

    @torch.inference_mode()
    def encode(self, references: list[ReferenceClip], transcript: str | None, language: str) -> VoiceFeatures:
        specs = [reference_spectrogram(torch.from_numpy(np.asarray(c.audio_32k, np.float32))) for c in references]
        sv = self.sv_embeddings(references) if self.model.is_pro else None  # [clips, 20480]
        sv_list = None if sv is None else [torch.from_numpy(row[None]) for row in sv]
        style = self.model.style_vector(specs, sv_list)  # [1, gin, 1], averaged over the clips
        prompt = None
        if transcript is not None:
            wav16k = torch.from_numpy(np.asarray(references[0].audio_16k, np.float32))
            prompt = prompt_semantic(self.hubert, self.model, wav16k).cpu().numpy().astype(np.int64)
        return VoiceFeatures(
            prompt_text=transcript,
            prompt_language=language,
            prompt_semantic=prompt,
            style=style.float().cpu().numpy().reshape(-1),
            speaker_embedding=reference_embedding(references),
            sv_embedding=sv,
        )

    def sv_embeddings(self, references: list[ReferenceClip]) -> np.ndarray:
        """float32 ``[clips, 20480]``: each clip's ERes2NetV2 embedding, from its 32 kHz audio
        resampled to 16 kHz as the official code does (not the HuBERT 16 kHz signal)."""
        verifier = self._speaker_verifier()
        rows = [verifier.embed(np.asarray(c.audio_32k, np.float32)).float().cpu().numpy()[0] for c in references]
        return np.stack(rows).astype(np.float32)

    def _speaker_verifier(self) -> SpeakerVerifier:
        """Loaded on the first Pro voice only: v1/v2 deployments never need the file."""
        if self._verifier is None:
            self._verifier = _checked(SpeakerVerifier.load, self.paths.sv, self.device, torch.float32)  # type: ignore[assignment]
        assert self._verifier is not None
        return self._verifier


def reference_embedding(references: list[ReferenceClip]) -> np.ndarray | None:
    """The voice's resemblyzer d-vector (float32 [256], unit norm) over every reference clip, for
    the post stage's speaker-similarity score. None when resemblyzer finds too little voiced
    audio: the voice still works, only that score is missing."""
    from workers.post.audio.quality import references_embedding

    try:
        return references_embedding([c.audio_16k for c in references])
    except ValueError as exc:
        log.warning("no speaker embedding for this voice: %s", exc)
        return None


def create_acoustic_engine(settings: Settings) -> GPTSoVITSAcoustic:
    return GPTSoVITSAcoustic(settings)


def create_voice_encoder(settings: Settings) -> GPTSoVITSVoiceEncoder:
    return GPTSoVITSVoiceEncoder(settings)


def create_acoustic_engine_for(settings: Settings, sovits_path: Path, version: str) -> GPTSoVITSAcoustic:
    return GPTSoVITSAcoustic(settings, sovits_path, version)


def create_voice_encoder_for(settings: Settings, acoustic: GPTSoVITSAcoustic) -> GPTSoVITSVoiceEncoder:
    return GPTSoVITSVoiceEncoder(settings, acoustic)


def detect_generation(gpt_path: Path, sovits_path: Path) -> str:
    """The generation of a GPT + SoVITS pair, as the official loader tells it from the SoVITS
    file (header bytes, then the text-embedding rows); raises ``CheckpointError`` for a file
    that is not a checkpoint of its kind (each is read, neither is built)."""
    from workers.checkpoints import CheckpointError, read_container
    from workers.sovits.model.checkpoint import detect_version

    sovits = read_container(sovits_path)
    if "enc_p.text_embedding.weight" not in sovits.weight:
        raise CheckpointError(f"{sovits_path}: not a GPT-SoVITS SoVITS checkpoint (no enc_p.text_embedding)")
    generation = detect_version(sovits, sovits_path)
    gpt = read_container(gpt_path)
    if "model.ar_text_embedding.word_embeddings.weight" not in gpt.weight:
        raise CheckpointError(f"{gpt_path}: not a GPT-SoVITS T2S (GPT) checkpoint")
    return generation
