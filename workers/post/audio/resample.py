"""Sample-rate conversion for the post stage.

soxr (libsoxr, the SoX resampler) rather than ``scipy.signal.resample_poly``: it handles awkward
ratios such as 32 000 → 44 100 (441/320) with a fixed-quality filter and linear cost, whereas a
polyphase FIR for that ratio is long and slow; it is maintained, wheels exist for every platform,
and librosa already depends on it. "VHQ" keeps passband ripple and aliasing far below what the
loudness and true-peak measurements can see.
"""

from __future__ import annotations

import numpy as np
import soxr

QUALITY = "VHQ"


def resample(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``[n]`` or ``[n, ch]`` float audio; returns float32 of the same rank."""
    x = np.asarray(samples, dtype=np.float32)
    if sample_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {sample_rate} -> {target_rate}")
    if sample_rate == target_rate:
        return x.copy()
    if x.shape[0] == 0:
        return x.copy()
    return np.asarray(soxr.resample(x, sample_rate, target_rate, quality=QUALITY), dtype=np.float32)
