"""The reference encoder ``ref_enc`` (MelStyleEncoder): a linear spectrogram of the reference
voice -> one global style vector ``[b, gin, 1]``. v2 feeds it only the first 704 bins."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import STYLE_HEADS, STYLE_HIDDEN, STYLE_KERNEL


def _mish(x: torch.Tensor) -> torch.Tensor:
    # Written out rather than F.mish so the rounding matches the official module.
    return x * torch.tanh(F.softplus(x))


class _Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mish(x)


class LinearNorm(nn.Module):
    """A Linear wrapped as ``.fc`` (key names ``*.fc.weight``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _ConvNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_in, d_out, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv1dGLU(nn.Module):
    """Residual gated conv: x + a * sigmoid(b), (a, b) = conv(x)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = _ConvNorm(channels, 2 * channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv1(x), self.channels, dim=1)
        return x + a * torch.sigmoid(b)


class StyleAttention(nn.Module):
    """Self-attention with a residual. The softmax temperature is sqrt(d_model) = sqrt(128),
    not sqrt(head_dim): an official quirk the weights were trained with."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.temperature = math.sqrt(d_model)
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)  # [b, h, t, d/h]

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / self.temperature, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.fc(out) + x


class MelStyleEncoder(nn.Module):
    def __init__(self, n_bins: int, out_dim: int) -> None:
        super().__init__()
        hidden = STYLE_HIDDEN
        # Identity where the official module has Dropout, so the stored indices (0, 3) line up.
        self.spectral = nn.Sequential(
            LinearNorm(n_bins, hidden),
            _Mish(),
            nn.Identity(),
            LinearNorm(hidden, hidden),
            _Mish(),
            nn.Identity(),
        )
        self.temporal = nn.Sequential(Conv1dGLU(hidden, STYLE_KERNEL), Conv1dGLU(hidden, STYLE_KERNEL))
        self.slf_attn = StyleAttention(hidden, STYLE_HEADS)
        self.fc = LinearNorm(hidden, out_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec ``[b, n_bins, frames]`` (all frames valid) -> style ``[b, out_dim, 1]``."""
        x = self.spectral(spec.transpose(1, 2))  # [b, f, hidden]
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        x = self.fc(self.slf_attn(x))  # [b, f, out]
        # Official pooling is a masked sum divided by the frame count.
        return (x.sum(dim=1) / x.shape[1]).unsqueeze(-1)
