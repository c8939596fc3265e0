"""Scoring a finished render for the quality gate: DNSMOS of the audio as delivered (levelled,
denoised when asked) and the speaker similarity of its d-vector to the voice's.

The voice's d-vector is ``VoiceFeatures.speaker_embedding`` when voice processing stored one;
for voices processed before it did, it is computed here from the voice's stored reference clips
(once per process and voice). With neither, similarity is skipped and the reason noted. A scorer
that fails (a broken model install, say) is logged and makes the render ``unscored``: never a
pass, never the render's failure either. Storage and database errors still propagate, to be
retried like any stage's. The render's T2S stop reason (written by the gpt stage) enters the
verdict too. The thresholds and the verdict are ``jobs.quality``'s; the state change is
``jobs.lifecycle``'s.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from threading import Lock

import numpy as np

from db.models import Voice
from jobs.engine import ReferenceClip
from jobs.lifecycle import StageClaim
from jobs.quality import RenderQuality, evaluate
from jobs.runtime import Runtime
from jobs.voices import voice_features
from workers.post.audio.quality import DNSMOS_WINDOW_S, dnsmos, references_embedding, speaker_similarity

log = logging.getLogger("voxmill.post.gate")

_CACHE_SIZE = 64
# (voice id, features key) → the voice's d-vector, or why it has none. A voice's features never
# change once it is ready, so neither does this.
_embeddings: OrderedDict[tuple[uuid.UUID, str | None], np.ndarray | str] = OrderedDict()
_lock = Lock()


class ScorerFault(Exception):
    """A scorer broke (not: could not measure this audio); its render is ``unscored``."""


def voice_embedding(runtime: Runtime, claim: StageClaim) -> np.ndarray | str:
    """The voice's d-vector, or a sentence saying why there is none. Raises ``ScorerFault``
    when the embedding model itself failed."""
    features = voice_features(runtime, claim)
    if features.speaker_embedding is not None:
        return np.asarray(features.speaker_embedding, np.float32)
    key = (claim.voice_id, claim.voice_features_key)
    with _lock:
        if key in _embeddings:
            _embeddings.move_to_end(key)
            return _embeddings[key]
    found = _embedding_from_references(runtime, claim.voice_id)  # a fault is not remembered
    with _lock:
        _embeddings[key] = found
        while len(_embeddings) > _CACHE_SIZE:
            _embeddings.popitem(last=False)
    return found


def _embedding_from_references(runtime: Runtime, voice_id: uuid.UUID) -> np.ndarray | str:
    with runtime.transaction() as session:
        voice = session.get(Voice, voice_id)
        upload_key = voice.upload_key if voice is not None else None
    if upload_key is None:
        return "the voice has no speaker embedding and no stored reference clips"
    clips = ReferenceClip.unpack(runtime.storage.get(upload_key))
    if not clips:
        return "the voice's reference has no clips"
    try:
        return references_embedding([c.audio_16k for c in clips])
    except ValueError as exc:
        return f"no d-vector from the voice's reference: {exc}"
    except Exception as exc:  # a scorer fault must not fail the render it scores
        log.exception("speaker embedding of the voice failed")
        raise ScorerFault(f"no d-vector from the voice's reference: {type(exc).__name__}: {exc}") from exc


def score_render(runtime: Runtime, claim: StageClaim, samples: np.ndarray, sample_rate: int) -> RenderQuality:
    notes: list[str] = []
    faults: list[str] = []
    scores: dict[str, float] | None = None
    try:
        # One 9 s window per 9 s of audio: a sentence is one window either way, and a long
        # segment costs a ninth of the reference script's 1 s hop.
        scores = dnsmos(samples, sample_rate, hop_s=DNSMOS_WINDOW_S).to_dict()
    except ValueError as exc:
        notes.append(f"dnsmos not scored: {exc}")
    except Exception as exc:  # a scorer fault: the render is unscored, never passed
        log.exception("DNSMOS failed")
        faults.append(f"dnsmos not scored: {type(exc).__name__}: {exc}")
    similarity: float | None = None
    try:
        embedding = voice_embedding(runtime, claim)
    except ScorerFault as exc:
        faults.append(f"similarity not scored: {exc}")
        embedding = None
    if isinstance(embedding, str):
        notes.append(f"similarity not scored: {embedding}")
    elif embedding is not None:
        try:
            similarity = speaker_similarity(samples, sample_rate, embedding)
        except ValueError as exc:
            notes.append(f"similarity not scored: {exc}")
        except Exception as exc:
            log.exception("speaker similarity failed")
            faults.append(f"similarity not scored: {type(exc).__name__}: {exc}")
    return evaluate(
        runtime.settings, scores, similarity, tuple(notes), faults=tuple(faults), stop_reason=claim.stop_reason
    )
