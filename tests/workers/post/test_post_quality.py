"""DNSMOS scores and speaker similarity."""

from __future__ import annotations

import numpy as np
import pytest

from workers.post.audio import quality
from workers.post.audio.quality import (
    EMBEDDING_DIM,
    dnsmos,
    similarity,
    speaker_embedding,
    speaker_similarity,
)

RATE = 32000
# resemblyzer 0.1.4 and webrtcvad import deprecated scipy/setuptools names; not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Please import `binary_dilation`:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:pkg_resources is deprecated:UserWarning"),
]


def test_dnsmos_prefers_clean_speech(speech: np.ndarray) -> None:
    clean = dnsmos(speech, RATE)
    noise = np.random.default_rng(0).normal(0, 0.05, speech.shape)
    hissy = dnsmos((speech + noise).astype(np.float32), RATE)
    for score in (clean, hissy):
        for value in score.to_dict().values():
            assert 1.0 <= value <= 5.0
    assert clean.bak > hissy.bak + 1.0
    assert quality._dnsmos_model(False) is quality._dnsmos_model(False)  # loaded once


def test_dnsmos_rejects_empty_audio() -> None:
    with pytest.raises(ValueError):
        dnsmos(np.zeros(0, np.float32), RATE)


def test_embedding_shape_and_norm(speech: np.ndarray) -> None:
    e = speaker_embedding(speech, RATE)
    assert e.shape == (EMBEDDING_DIM,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-4)
    assert similarity(e, e) == pytest.approx(1.0, abs=1e-6)


def test_same_voice_scores_higher_than_another_voice(
    sentences: dict[str, np.ndarray], other_voice: np.ndarray
) -> None:
    voice = speaker_embedding(sentences["a"], RATE)
    same = speaker_similarity(sentences["b"], RATE, voice)  # other words, same voice
    other = speaker_similarity(other_voice, RATE, voice)  # same words, other voice
    assert same > other + 0.1


def test_similarity_is_cosine() -> None:
    a = np.array([1.0, 0.0, 0.0])
    assert similarity(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    assert similarity(a, np.array([3.0, 3.0, 0.0])) == pytest.approx(np.sqrt(0.5))
    assert similarity(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        similarity(a, np.zeros(3))
    with pytest.raises(ValueError):
        similarity(a, np.ones(4))


def test_embedding_needs_voiced_audio(speech: np.ndarray) -> None:
    with pytest.raises(ValueError):
        speaker_embedding(np.zeros(RATE, np.float32), RATE)
    with pytest.raises(ValueError):
        speaker_embedding(speech[:1000], RATE)  # 31 ms


def test_dnsmos_matches_speechmos_reference_loop(speech: np.ndarray) -> None:
    # Our windowing must reproduce speechmos's own __call__ (the reference script's loop).
    long = np.concatenate([speech, speech, speech])  # ~15 s: several 1 s hops
    ours = dnsmos(long, RATE)
    x16 = np.clip(quality.resample(long, RATE, 16000), -1, 1).astype(np.float32)
    ref = quality._dnsmos_model(False)(x16, 16000, False)
    assert ours.sig == pytest.approx(ref["sig_mos"], abs=1e-4)
    assert ours.bak == pytest.approx(ref["bak_mos"], abs=1e-4)
    assert ours.ovrl == pytest.approx(ref["ovrl_mos"], abs=1e-4)
    assert ours.p808 == pytest.approx(ref["p808_mos"], abs=1e-4)
    coarse = dnsmos(long, RATE, hop_s=9.01)
    assert coarse.ovrl == pytest.approx(ours.ovrl, abs=0.3)
