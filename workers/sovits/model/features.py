"""Audio front of the SoVITS side: the reference linear spectrogram (official ``get_spepc``) and
sample-rate conversion.

Resampling uses soxr at "HQ" quality: that is exactly what librosa's default (``soxr_hq``) runs,
and the official code loads the 16 kHz HuBERT input with ``librosa.load(path, sr=16000)``.
(The official 32 kHz spectrogram path resamples with torchaudio instead; references stored at
32 kHz need no resampling there.)
"""

from __future__ import annotations

import numpy as np
import torch


def reference_spectrogram(
    wav32k: torch.Tensor, n_fft: int = 2048, hop_length: int = 640, win_length: int = 2048
) -> torch.Tensor:
    """Mono 32 kHz waveform ``[S]`` -> linear magnitude spectrogram ``[1, n_fft//2+1, frames]``.

    Official math: peak above 1 is scaled down by min(2, peak); reflect pad (n_fft-hop)/2 on both
    sides; STFT with a periodic Hann window, center=False; magnitude sqrt(re^2 + im^2 + 1e-8).
    Computed in fp32 whatever the input dtype.
    """
    if wav32k.dim() != 1:
        raise ValueError(f"expected a mono waveform [S], got shape {tuple(wav32k.shape)}")
    y = wav32k.to(torch.float32)
    peak = y.abs().max()
    if peak > 1:
        y = y / min(2.0, float(peak))
    pad = (n_fft - hop_length) // 2
    if y.shape[0] <= pad:
        raise ValueError(f"reference too short: {y.shape[0]} samples, need more than {pad}")
    y = torch.nn.functional.pad(y[None, None], (pad, pad), mode="reflect")[0]  # [1, S + 2*pad]
    window = torch.hann_window(win_length, dtype=torch.float32, device=y.device)
    spec = torch.stft(
        y,
        n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    return torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-8)  # [1, bins, frames]


def resample(wav: torch.Tensor | np.ndarray, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Mono float waveform ``[S]`` from ``orig_sr`` to ``target_sr`` (soxr HQ = librosa default)."""
    import soxr  # the one non-torch dependency of this package, kept local to this function

    x = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    x = x.astype(np.float32, copy=False)
    if orig_sr == target_sr:
        return torch.from_numpy(x.copy())
    return torch.from_numpy(np.ascontiguousarray(soxr.resample(x, orig_sr, target_sr, quality="HQ")))
