"""Speech denoising with RNNoise (the ``pyrnnoise`` package; weights are compiled into its library).

RNNoise runs at 48 kHz on 480-sample int16 frames. pyrnnoise 0.4.5's ``denoise_wav`` helper is
broken, so audio is resampled here (soxr) and fed whole to ``RNNoise(48000).denoise_chunk(...,
partial=True)``, which frames it, flushes the last partial frame and resets its state.

Two pitfalls handled here: the output lags the input by ``DELAY`` samples (two 10 ms frames,
measured), so the input is padded and the output shifted back;
and pyrnnoise casts its float output to int16 without clipping, so an overshoot would wrap
around. Input is therefore scaled to a ``HEADROOM`` peak before the int16 conversion and scaled
back afterwards, which also gives RNNoise the same working level whatever the job's level was.
"""

from __future__ import annotations

import numpy as np
from pyrnnoise import RNNoise

from workers.post.audio.meter import as_frames
from workers.post.audio.resample import resample

RNNOISE_RATE = 48000
# Measured on pyrnnoise 0.4.5: clean speech in vs out cross-correlates best at this lag.
DELAY = 960
HEADROOM = 0.5
INT16_SCALE = 32767.0


def denoise(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Denoise ``[n]`` or ``[n, ch]`` float audio; returns float32 of the same shape and rate."""
    x = as_frames(samples)
    n = x.shape[0]
    peak = float(np.abs(x).max()) if n else 0.0
    if peak == 0.0:
        out = x.astype(np.float32)
        return out[:, 0] if np.ndim(samples) == 1 else out
    scale = HEADROOM / peak
    x48 = as_frames(resample(x * scale, sample_rate, RNNOISE_RATE))  # [m, ch]
    m = x48.shape[0]
    pcm = np.round(np.clip(x48, -1.0, 1.0) * INT16_SCALE).astype(np.int16)
    pcm = np.concatenate([pcm, np.zeros((DELAY, pcm.shape[1]), np.int16)], axis=0)
    engine = RNNoise(RNNOISE_RATE)
    frames = [frame for _, frame in engine.denoise_chunk(np.ascontiguousarray(pcm.T), partial=True)]
    y48 = np.concatenate(frames, axis=1).T.astype(np.float32)  # [m + DELAY, ch]
    y48 = y48[DELAY : DELAY + m] / (INT16_SCALE * scale)
    y = as_frames(resample(y48, RNNOISE_RATE, sample_rate))
    if y.shape[0] < n:
        y = np.concatenate([y, np.zeros((n - y.shape[0], y.shape[1]))], axis=0)
    out = y[:n].astype(np.float32)
    return out[:, 0] if np.ndim(samples) == 1 else out
