"""Front end of the speaker-verification (SV) model: the official 32 kHz -> 16 kHz resampler and
the Kaldi-style log-mel filterbank, in torch only.

Facts (GPT-SoVITS v2Pro, ``sv.py`` / ``eres2net/kaldi.py``; see CHECKPOINTS.md section 7.4):

* The SV input is the 32 kHz reference (already divided by min(2, peak) when the peak is > 1)
  resampled by torchaudio ``Resample(32000, 16000)`` at its defaults (``sinc_interp_hann``,
  ``lowpass_filter_width`` 6, ``rolloff`` 0.99). For 2:1 that is one 28-tap windowed-sinc FIR at
  stride 2 over the input zero-padded by 13 samples left and 15 right; ``ceil(S/2)`` outputs.
  It is not soxr (which ``features.resample`` runs for HuBERT): a naive or soxr decimation moves
  the embedding by ~0.1.
* The fbank is torchaudio's Kaldi-compatible ``fbank`` with ``num_mel_bins=80``,
  ``sample_frequency=16000``, ``dither=0`` and every other option at its default: 400-sample
  frames every 160 (snip_edges: ``1 + (N-400)//160`` frames), per-frame DC removal,
  pre-emphasis 0.97, povey window, FFT 512, power spectrum, 80 mel triangles on
  ``1127 ln(1 + f/700)`` from 20 Hz to Nyquist, ``log(max(e, float32 eps))``. No energy column,
  no mean normalisation, and the waveform stays on the float scale (no x32768).

Everything runs in the input's float dtype (fp32 in practice: CPU rfft has no fp16).
"""

from __future__ import annotations

import math

import torch

SV_SAMPLE_RATE = 16000
NUM_MEL_BINS = 80
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512  # next power of two above the frame
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
LOG_FLOOR = float(torch.finfo(torch.float32).eps)  # 1.1920929e-07, Kaldi's energy floor

# torchaudio's sinc_interp_hann defaults, for orig/new = 2/1 after dividing by the gcd.
_LOWPASS_WIDTH = 6
_ROLLOFF = 0.99
_ORIG, _NEW = 2, 1


def _halfband_taps(dtype: torch.dtype, device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """The 2:1 FIR taps ``[1, 1, 28]`` and the left padding (13)."""
    base = min(_ORIG, _NEW) * _ROLLOFF  # cutoff relative to the new rate
    width = math.ceil(_LOWPASS_WIDTH * _ORIG / base)  # 13
    # Built in float64 (as torchaudio's transform does), cast at the end.
    t = torch.arange(-width, width + _ORIG, dtype=torch.float64) / _ORIG * base
    t = t.clamp(-_LOWPASS_WIDTH, _LOWPASS_WIDTH)
    window = torch.cos(t * math.pi / _LOWPASS_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    taps = sinc * window * (base / _ORIG)
    return taps.to(device=device, dtype=dtype).view(1, 1, -1), width


def resample_32k_to_16k(wav32k: torch.Tensor) -> torch.Tensor:
    """``[..., S]`` at 32 kHz -> ``[..., ceil(S/2)]`` at 16 kHz, exactly as torchaudio's
    ``Resample(32000, 16000)`` at its defaults."""
    if not wav32k.is_floating_point():
        raise TypeError(f"expected a float waveform, got {wav32k.dtype}")
    shape = wav32k.shape
    length = shape[-1]
    taps, width = _halfband_taps(wav32k.dtype, wav32k.device)
    x = wav32k.reshape(-1, 1, length)
    x = torch.nn.functional.pad(x, (width, width + _ORIG))  # [b, 1, S + 28]
    y = torch.nn.functional.conv1d(x, taps, stride=_ORIG)  # [b, 1, S//2 + 1]
    out_len = math.ceil(_NEW * length / _ORIG)
    return y[..., :out_len].reshape(*shape[:-1], out_len)


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def mel_filters(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """Kaldi's mel filterbank ``[80, 257]`` for 16 kHz / FFT 512 (the Nyquist column is zero)."""
    n_bins = FFT_SIZE // 2
    nyquist = 0.5 * SV_SAMPLE_RATE
    bin_hz = SV_SAMPLE_RATE / FFT_SIZE
    mel_low, mel_high = 1127.0 * math.log(1.0 + LOW_FREQ / 700.0), 1127.0 * math.log(1.0 + nyquist / 700.0)
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    index = torch.arange(NUM_MEL_BINS, device=device).unsqueeze(1)
    # Same operation order and dtype as torchaudio's get_mel_banks (fp32 by default).
    left = (mel_low + index * delta).to(dtype)
    center = (mel_low + (index + 1.0) * delta).to(dtype)
    right = (mel_low + (index + 2.0) * delta).to(dtype)
    mel = _mel(bin_hz * torch.arange(n_bins, device=device, dtype=dtype)).unsqueeze(0)  # [1, 256]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # [80, 256]
    return torch.nn.functional.pad(banks, (0, 1))  # [80, 257]


def kaldi_fbank(wav16k: torch.Tensor) -> torch.Tensor:
    """Mono 16 kHz waveform ``[N]`` (float scale) -> log-mel features ``[T, 80]``,
    ``T = 1 + (N - 400) // 160``."""
    if wav16k.dim() != 1:
        raise ValueError(f"expected a mono waveform [N], got shape {tuple(wav16k.shape)}")
    if not wav16k.is_floating_point():
        raise TypeError(f"expected a float waveform, got {wav16k.dtype}")
    n = wav16k.shape[0]
    if n < FRAME_LENGTH:
        raise ValueError(f"audio too short for the SV front end: {n} samples at 16 kHz, need {FRAME_LENGTH}")
    frames = wav16k.unfold(0, FRAME_LENGTH, FRAME_SHIFT)  # [T, 400], snip_edges
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # first sample is its own predecessor
    frames = frames - PREEMPHASIS * previous
    window = torch.hann_window(FRAME_LENGTH, periodic=False, dtype=frames.dtype, device=frames.device).pow(0.85)
    frames = torch.nn.functional.pad(frames * window, (0, FFT_SIZE - FRAME_LENGTH))  # [T, 512]
    power = torch.fft.rfft(frames).abs().pow(2.0)  # [T, 257]
    energies = power @ mel_filters(frames.dtype, frames.device).T  # [T, 80]
    return torch.clamp(energies, min=LOG_FLOOR).log()
