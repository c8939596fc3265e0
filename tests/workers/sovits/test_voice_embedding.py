"""The speaker embedding a voice's features carry (resemblyzer's bundled d-vector over its
reference clips): 256 floats of unit norm, closer for two recordings of one speaker than for two
speakers, and absent — not an error — when the clips hold too little voice."""

from __future__ import annotations

import numpy as np

from jobs.engine import ReferenceClip
from tests.support import speech as S
from workers.post.audio.quality import similarity
from workers.sovits.engine import reference_embedding


def clips(text: str, voice: str) -> list[ReferenceClip]:
    x16, _ = S.speech_wav(text, voice, 16000)
    x32, _ = S.speech_wav(text, voice, 32000)
    n = min(len(x16), len(x32) // 2)
    return [ReferenceClip(x32[: 2 * n], x16[:n])]


def test_reference_embedding_tells_speakers_apart() -> None:
    piper_a = reference_embedding(clips(S.SENTENCES[0], "piper"))
    piper_b = reference_embedding(clips(S.SENTENCES[3], "piper"))
    espeak = reference_embedding(clips(S.SENTENCES[0], "espeak"))
    for e in (piper_a, piper_b, espeak):
        assert e is not None and e.dtype == np.float32 and e.shape == (256,)
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-4
    assert piper_a is not None and piper_b is not None and espeak is not None
    same, other = similarity(piper_a, piper_b), similarity(piper_a, espeak)
    assert same > other + 0.05, (same, other)


def test_no_embedding_without_voice() -> None:
    silent = ReferenceClip(np.zeros(32000 * 4, np.float32), np.zeros(16000 * 4, np.float32))
    assert reference_embedding([silent]) is None
