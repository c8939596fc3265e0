"""Look-ahead true-peak limiter.

Offline, look-ahead costs nothing, so the limiter can be exact rather than reactive: from the
oversampled peak of every sample it computes the gain each sample needs, then a smooth envelope
that never exceeds any needed gain. The envelope is a moving minimum (covering the look-ahead and
a hold time) followed by two trailing moving averages; because each averaged value is a minimum
over a window that contains the current sample, the smoothed gain is ≤ the required gain at every
sample. Attack and release are each a ``lookahead_ms`` S-curve; the hold keeps the gain from
fluttering between syllables.

Transparent by construction: a signal whose true peak is already SAFETY_DB under the ceiling
is returned unchanged, sample for sample.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import minimum_filter1d

from workers.post.audio.meter import as_frames, oversampled_abs, true_peak_db

# Gain modulation between interpolated samples can leave a few hundredths of a dB over the
# target; aim this much under it, then verify.
SAFETY_DB = 0.05


def _trailing_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over [i - size + 1, i], the start padded with x[0]."""
    padded = np.concatenate([np.full(size - 1, x[0]), x])
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    return np.asarray((csum[size:] - csum[:-size]) / size)


def limiter_gain(
    samples: np.ndarray,
    sample_rate: int,
    ceiling_db: float,
    lookahead_ms: float = 5.0,
    hold_ms: float = 40.0,
) -> np.ndarray:
    """Gain per sample ``[n]`` (≤ 1) that keeps the true peak under ``ceiling_db``."""
    peak = oversampled_abs(samples, sample_rate)  # [n]
    n = peak.shape[0]
    if n == 0:
        return np.ones(0)
    ceiling = 10.0 ** (ceiling_db / 20.0)
    with np.errstate(divide="ignore"):
        need = np.where(peak > ceiling, ceiling / peak, 1.0)  # [n]
    if need.min() >= 1.0:
        return np.ones(n)
    a = max(1, round(lookahead_ms * 1e-3 * sample_rate / 2))  # each of the two averages
    hold = max(0, round(hold_ms * 1e-3 * sample_rate))
    # Window [j - hold, j + 2a - 2]: every sample i that the two averages at i draw on has j
    # within 2a - 2 before it, so the minimum there already includes need[i].
    size = hold + 2 * a - 1
    moving_min = minimum_filter1d(need, size=size, mode="nearest")
    shift = size // 2 - hold
    held = moving_min[np.clip(np.arange(n) + shift, 0, n - 1)]
    gain = _trailing_mean(_trailing_mean(held, a), a)
    return np.asarray(np.minimum(gain, 1.0))


def true_peak_limit(
    samples: np.ndarray,
    sample_rate: int,
    ceiling_db: float = -1.0,
    lookahead_ms: float = 5.0,
    hold_ms: float = 40.0,
) -> np.ndarray:
    """Return float32 audio whose true peak is ≤ ``ceiling_db`` dBTP (same shape as input)."""
    x = as_frames(samples)
    target = ceiling_db - SAFETY_DB
    y = x
    for _ in range(3):
        gain = limiter_gain(y, sample_rate, target, lookahead_ms, hold_ms)
        if gain.size == 0 or gain.min() >= 1.0:
            break  # under the ceiling already (checked on the oversampled peak)
        y = y * gain[:, None]
        over = true_peak_db(y, sample_rate) - ceiling_db
        if over <= 0:
            break
        target -= over + SAFETY_DB
    else:
        over = true_peak_db(y, sample_rate) - ceiling_db
        if over > 0:
            # Not seen in practice; a static trim keeps the promise if the envelope falls short.
            y = y * 10.0 ** (-(over + SAFETY_DB) / 20.0)
    out = y.astype(np.float32)
    return out[:, 0] if np.ndim(samples) == 1 else out
