"""Quality scores for finished audio: DNSMOS P.835 (SIG / BAK / OVRL, plus P.808) through the ONNX
models bundled in ``speechmos``, and speaker similarity through ``resemblyzer``'s bundled d-vector
encoder (256-d, L2-normalised).

Both models load lazily, once per process, under a lock, so importing this module is cheap and a
worker that never scores pays nothing. ONNX Runtime gets ``ORT_THREADS`` threads: post workers
scale by processes, and a per-process thread pool the size of the machine oversubscribes it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import numpy as np

from workers.post.audio.meter import as_frames
from workers.post.audio.resample import resample

DNSMOS_RATE = 16000  # the models' only rate
DNSMOS_WINDOW_S = 9.01  # the models' input length
EMBEDDING_RATE = 16000  # resemblyzer's
EMBEDDING_DIM = 256
ORT_THREADS = 1
# resemblyzer trims silences; less voiced audio than this gives a meaningless embedding.
MIN_VOICED_S = 0.3

_lock = threading.Lock()
_dnsmos_models: dict[bool, Any] = {}
_encoder: Any = None


@dataclass(frozen=True)
class DnsmosScores:
    sig: float  # speech signal quality, 1-5
    bak: float  # background intrusiveness, 1-5 (higher: less noise)
    ovrl: float  # overall, 1-5
    p808: float  # P.808 overall MOS, 1-5

    def to_dict(self) -> dict[str, float]:
        return {"sig": self.sig, "bak": self.bak, "ovrl": self.ovrl, "p808": self.p808}


def _mono(samples: np.ndarray) -> np.ndarray:
    return np.asarray(as_frames(samples).mean(axis=1))


def _dnsmos_model(personalized: bool) -> Any:
    with _lock:
        model = _dnsmos_models.get(personalized)
        if model is None:
            import onnxruntime as ort
            from speechmos import dnsmos as speechmos_dnsmos

            root = os.path.dirname(os.path.abspath(speechmos_dnsmos.__file__))
            primary = os.path.join(
                root, "pdnsmos_models" if personalized else "dnsmos_models", "sig_bak_ovr.onnx"
            )
            p808 = os.path.join(root, "dnsmos_models", "model_v8.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = ORT_THREADS
            options.inter_op_num_threads = ORT_THREADS
            providers = ["CPUExecutionProvider"]
            # speechmos's own constructor opens sessions with default (all-core) options; build
            # the object without it and attach ours. We use its feature and calibration methods
            # (audio_melspec, get_polyfit_val) and attribute names as of speechmos 0.0.1.1.
            model = speechmos_dnsmos.DNSMOS.__new__(speechmos_dnsmos.DNSMOS)
            model.primary_model_path = primary
            model.onnx_sess = ort.InferenceSession(primary, options, providers=providers)
            model.p808_onnx_sess = ort.InferenceSession(p808, options, providers=providers)
            _dnsmos_models[personalized] = model
        return model


def dnsmos(
    samples: np.ndarray,
    sample_rate: int,
    *,
    personalized: bool = False,
    hop_s: float = 1.0,
) -> DnsmosScores:
    """DNSMOS of a clip (mixed to mono, resampled to 16 kHz).

    As in Microsoft's reference script, a clip shorter than the models' 9.01 s window is looped
    to fill it, and a longer one is scored in 9.01 s windows every ``hop_s`` (1 s there) and
    averaged. Sentences fit in one window, so ``hop_s`` only matters for long audio, where a hop
    of one window costs a ninth of the reference's time for a slightly coarser average.
    """
    x = _mono(samples)
    if x.size == 0:
        raise ValueError("DNSMOS needs non-empty audio")
    if hop_s <= 0:
        raise ValueError(f"hop_s must be positive, got {hop_s}")
    x16 = np.clip(resample(x, sample_rate, DNSMOS_RATE), -1.0, 1.0).astype(np.float32)
    model = _dnsmos_model(personalized)
    window = int(DNSMOS_WINDOW_S * DNSMOS_RATE)
    while x16.size < window:
        x16 = np.concatenate([x16, x16])
    # The reference's window count, which counts whole seconds only (so it can leave out a
    # last window that would still fit); kept so scores match it.
    count = max(1, int((np.floor(x16.size / DNSMOS_RATE) - DNSMOS_WINDOW_S) / hop_s) + 1)
    rows = []
    for i in range(count):
        start = int(i * hop_s * DNSMOS_RATE)
        seg = x16[start : start + window]
        if seg.size < window:
            continue
        # The P.808 model takes a mel spectrogram of the window less its last 10 ms hop.
        mel = model.audio_melspec(audio=seg[:-160]).astype(np.float32)[None]  # [1, t, 120]
        p808 = model.p808_onnx_sess.run(None, {"input_1": mel})[0][0][0]
        sig, bak, ovrl = model.onnx_sess.run(None, {"input_1": seg[None]})[0][0]
        rows.append((*model.get_polyfit_val(sig, bak, ovrl, personalized), p808))
    sig_mos, bak_mos, ovrl_mos, p808_mos = np.mean(np.asarray(rows, dtype=np.float64), axis=0)
    return DnsmosScores(
        sig=float(sig_mos), bak=float(bak_mos), ovrl=float(ovrl_mos), p808=float(p808_mos)
    )


def _voice_encoder() -> Any:
    global _encoder
    with _lock:
        if _encoder is None:
            from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder(device="cpu", verbose=False)
        return _encoder


def speaker_embedding(wav: np.ndarray, sr: int) -> np.ndarray:
    """256-d unit-norm d-vector of the speaker in ``wav`` (float32 ``[256]``).

    Raises ValueError when, after resemblyzer's silence trimming, under ``MIN_VOICED_S`` of
    voiced audio is left (silence or a click has no speaker).
    """
    from resemblyzer import preprocess_wav

    x16 = resample(_mono(wav), sr, EMBEDDING_RATE).astype(np.float32)
    if x16.size == 0 or not np.any(x16):
        raise ValueError("speaker embedding needs non-silent audio")
    voiced = preprocess_wav(x16, source_sr=None)  # volume-normalised, long silences cut
    if voiced.size < MIN_VOICED_S * EMBEDDING_RATE:
        raise ValueError(
            f"only {voiced.size / EMBEDDING_RATE:.2f} s of voiced audio; "
            f"need {MIN_VOICED_S} s for a speaker embedding"
        )
    embedding = _voice_encoder().embed_utterance(voiced)
    return np.asarray(embedding, dtype=np.float32)


def references_embedding(clips_16k: Sequence[np.ndarray]) -> np.ndarray:
    """The d-vector of a voice: one embedding over all of its 16 kHz reference clips. Raises
    ValueError like ``speaker_embedding`` when they hold too little voiced audio."""
    return speaker_embedding(np.concatenate([np.asarray(c, np.float32) for c in clips_16k]), EMBEDDING_RATE)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (1.0: same direction)."""
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"embedding shapes differ: {va.shape} vs {vb.shape}")
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    if denom == 0.0:
        raise ValueError("cannot compare a zero embedding")
    return float(np.dot(va, vb) / denom)


def speaker_similarity(segment: np.ndarray, sr: int, voice_embedding: np.ndarray) -> float:
    """Cosine similarity between a rendered segment and a voice's reference embedding."""
    return similarity(speaker_embedding(segment, sr), voice_embedding)
