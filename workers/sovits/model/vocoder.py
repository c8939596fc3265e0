"""The waveform decoder ``dec``: a HiFiGAN generator (resblock type 1) conditioned on the style
vector; 50 Hz latent frames in, 32 kHz samples out (upsampling 10*8*2*2*2 = 640)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import weight_norm
from .config import SoVITSConfig

LRELU_SLOPE = 0.1


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) residual pairs, leaky ReLU before each conv."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm.mark(
                nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            )
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm.mark(
                nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1))
            )
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class Generator(nn.Module):
    def __init__(self, config: SoVITSConfig) -> None:
        super().__init__()
        c = config
        ch = c.upsample_initial_channel
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(c.inter_channels, ch, 7, padding=3)
        self.cond = nn.Conv1d(c.gin_channels, ch, 1)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            self.ups.append(
                weight_norm.mark(nn.ConvTranspose1d(ch >> i, ch >> (i + 1), k, u, padding=(k - u) // 2))
            )
            for rk, rd in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch >> (i + 1), rk, rd))
        self.conv_post = nn.Conv1d(ch >> len(c.upsample_rates), 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        # The official generator uses leaky_relu's default slope (0.01) here, not 0.1.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)  # [b, 1, t * 640]
