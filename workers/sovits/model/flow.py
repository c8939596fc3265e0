"""The normalising flow ``flow``, run in reverse only: prior sample z_p -> latent z.

Four mean-only affine coupling layers, each followed by a parameter-free channel flip, so the
checkpoint holds only ``flow.flows.{0,2,4,6}``. Each coupling conditions a WaveNet stack on the
style vector."""

from __future__ import annotations

import torch
from torch import nn

from . import weight_norm
from .config import FLOW_COUPLINGS, FLOW_DILATION, FLOW_KERNEL, FLOW_WN_LAYERS


class WN(nn.Module):
    """Non-causal WaveNet: gated dilated convs, residual + skip outputs, global conditioning."""

    def __init__(self, channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin: int) -> None:
        super().__init__()
        self.channels = channels
        self.cond_layer = weight_norm.mark(nn.Conv1d(gin, 2 * channels * n_layers, 1))
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                weight_norm.mark(
                    nn.Conv1d(
                        channels,
                        2 * channels,
                        kernel_size,
                        dilation=dilation,
                        padding=(kernel_size * dilation - dilation) // 2,
                    )
                )
            )
            # The last layer feeds only the skip sum, so it is half as wide.
            out = 2 * channels if i < n_layers - 1 else channels
            self.res_skip_layers.append(weight_norm.mark(nn.Conv1d(channels, out, 1)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        c = self.channels
        cond = self.cond_layer(g)  # [b, 2*c*n_layers, 1], one slice per layer
        output = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            h = in_layer(x) + cond[:, 2 * c * i : 2 * c * (i + 1)]  # [b, 2c, t]
            acts = torch.tanh(h[:, :c]) * torch.sigmoid(h[:, c:])
            rs = res_skip(acts)
            if i < last:
                x = x + rs[:, :c]
                output = output + rs[:, c:]
            else:
                output = output + rs
        return output


class CouplingLayer(nn.Module):
    """Mean-only coupling: the second half is shifted by a function of the first half."""

    def __init__(self, channels: int, hidden: int, gin: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, FLOW_KERNEL, FLOW_DILATION, FLOW_WN_LAYERS, gin)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        m = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - m], dim=1)


class Flip(nn.Module):
    """Reverses the channel order (no parameters; occupies the odd ``flows`` indices)."""

    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    def __init__(self, channels: int, hidden: int, gin: int) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(FLOW_COUPLINGS):
            self.flows.append(CouplingLayer(channels, hidden, gin))
            self.flows.append(Flip())

    def reverse(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        for flow in reversed(self.flows):
            z = flow.reverse(z, g)
        return z
