"""Level measurements: BS.1770 integrated loudness, true peak, sample peak, RMS and noise floor.

Loudness is pyloudnorm's ITU-R BS.1770-4 meter (K-weighting, 400 ms blocks, -70 LUFS absolute and
-10 LU relative gates). True peak follows BS.1770-4 Annex 2 in spirit: oversample so the working
rate is at least 192 kHz (4x at 48 kHz, 6x at 32 kHz, 5x at 44.1 kHz), take the largest absolute
value. Our interpolator is scipy's Kaiser-windowed polyphase FIR, longer than the Annex's 48-tap
example filter, so it under-reads inter-sample peaks less, never more.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
from scipy.signal import resample_poly

# BS.1770 gating blocks are 400 ms; pyloudnorm refuses anything shorter.
GATING_BLOCK_S = 0.4
TRUE_PEAK_MIN_RATE = 192_000
BLOCK = 1 << 20  # input samples oversampled at once
OVERLAP = 256
NEG_INF = float("-inf")


def as_frames(samples: np.ndarray) -> np.ndarray:
    """View ``[n]`` or ``[n, ch]`` audio as float64 ``[n, ch]``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim != 2:
        raise ValueError(f"audio must be [n] or [n, channels], got shape {x.shape}")
    return x


def db(value: float) -> float:
    """Amplitude ratio to dB, with silence as -inf rather than a warning."""
    return 20.0 * math.log10(value) if value > 0 else NEG_INF


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS; -inf for empty or silent input, or input whose every block
    is under the -70 LUFS absolute gate.

    Input shorter than one 400 ms gating block gets the ungated K-weighted loudness of the whole
    clip (one block spanning it), which is what the gated value tends to for a short, steady
    sound, instead of pyloudnorm's ValueError.
    """
    x = as_frames(samples)
    n = x.shape[0]
    if n == 0 or not np.any(x):
        return NEG_INF
    block_s = GATING_BLOCK_S
    if n < GATING_BLOCK_S * sample_rate:
        block_s = n / sample_rate
    meter = pyloudnorm.Meter(sample_rate, block_size=block_s)
    data = x[:, 0] if x.shape[1] == 1 else x
    value = float(meter.integrated_loudness(data))
    return value if math.isfinite(value) else NEG_INF


def oversampling_factor(sample_rate: int) -> int:
    return max(1, math.ceil(TRUE_PEAK_MIN_RATE / sample_rate))


def oversampled_abs(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per input sample, the largest |value| of the band-limited signal in [t, t + 1 sample).

    Returns ``[n]`` (max over channels), so a limiter can turn it into a gain per sample.
    """
    x = as_frames(samples)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0)
    factor = oversampling_factor(sample_rate)
    peak = np.abs(x).max(axis=1)  # [n]
    # In blocks, so a whole book never sits oversampled in memory (an hour at 44.1 kHz would be
    # 6 GB). The interpolation filter reaches 10 input samples either side; with OVERLAP of real
    # neighbours around each block its middle is what the whole-signal pass computes.
    for start in range(0, n, BLOCK):
        lo, hi = max(0, start - OVERLAP), min(n, start + BLOCK + OVERLAP)
        for ch in range(x.shape[1]):
            up = resample_poly(x[lo:hi, ch], factor, 1)  # [(hi - lo) * factor]
            end = min(n, start + BLOCK)
            out = peak[start:end]
            # Strided maxima over the phases: a reshape(n, factor).max(1) reduces along a tiny
            # axis and costs more than the resampling itself.
            for phase in range(factor):
                np.maximum(out, np.abs(up[(start - lo) * factor + phase : (end - lo) * factor : factor]), out=out)
    return np.asarray(peak)


def true_peak_db(samples: np.ndarray, sample_rate: int) -> float:
    """True peak in dBTP (oversampled to ≥192 kHz); -inf for silence."""
    peak = oversampled_abs(samples, sample_rate)
    return db(float(peak.max())) if peak.size else NEG_INF


def sample_peak_db(samples: np.ndarray) -> float:
    x = as_frames(samples)
    return db(float(np.abs(x).max())) if x.size else NEG_INF


def rms_db(samples: np.ndarray) -> float:
    """Unweighted RMS over the whole clip in dBFS, Audacity's convention (full-scale sine = -3 dB),
    which is what ACX's checks report. Channels are pooled."""
    x = as_frames(samples)
    return db(math.sqrt(float(np.mean(np.square(x))))) if x.size else NEG_INF


def noise_floor_db(samples: np.ndarray, sample_rate: int, window_s: float = 0.5) -> float:
    """RMS of the quietest ``window_s`` stretch (hop 50 ms), in dBFS — ACX's "noise floor".

    Clips shorter than the window are measured as one window. Digital silence gives -inf (ACX
    itself would flag it as missing room tone; we only report).
    """
    x = as_frames(samples)
    n = x.shape[0]
    if n == 0:
        return NEG_INF
    power = np.square(x).mean(axis=1)  # [n]
    win = max(1, min(n, round(window_s * sample_rate)))
    hop = max(1, round(0.05 * sample_rate))
    csum = np.concatenate([[0.0], np.cumsum(power)])
    starts = np.arange(0, n - win + 1, hop)
    means = (csum[starts + win] - csum[starts]) / win
    # cumsum round-off can leave tiny negatives where the true mean is exactly zero
    quietest = max(float(means.min()), 0.0)
    return db(math.sqrt(quietest)) if quietest > 1e-20 else NEG_INF
