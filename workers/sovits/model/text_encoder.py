"""The prior encoder ``enc_p``: semantic content and phones, joined by MRTE cross-attention
under the voice's style vector, give the mean and log-scale of the flow's latent. Inference
only, batch of equal-length items (no padding masks: every official inference call is B=1)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ATTN_WINDOW, MRTE_CHANNELS, MRTE_HEADS, MRTE_HIDDEN, SSL_DIM, SoVITSConfig


class LayerNorm(nn.Module):
    """LayerNorm over channels of a channels-first tensor; params named gamma/beta as stored."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """VITS attention with 1x1-conv projections; with ``window`` it adds relative-position key
    and value embeddings shared by all heads (self-attention only)."""

    def __init__(self, channels: int, n_heads: int, window: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        if window is not None:
            self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * self.head_dim**-0.5)
            self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window + 1, self.head_dim) * self.head_dim**-0.5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [b, h, t, d]

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, t_q = x.shape
        # The official code scales q before both the content and the relative-key products.
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(context))
        v = self._heads(self.conv_v(context))
        scores = torch.matmul(q, k.transpose(-2, -1))  # [b, h, t_q, t_k]
        if self.window is not None:
            scores = scores + self._relative_key_scores(q)
        p = torch.softmax(scores, dim=-1)
        out = torch.matmul(p, v)  # [b, h, t_q, d]
        if self.window is not None:
            out = out + self._relative_values(p)
        out = out.transpose(2, 3).reshape(b, c, t_q)
        return self.conv_o(out)

    def _relative_key_scores(self, q: torch.Tensor) -> torch.Tensor:
        """scores[i, j] += q_i . emb_rel_k[j - i + w] for |j - i| <= w, else 0.

        Done as a gather from q against the window's 2w+1 embeddings plus a zero row on each
        side (for "outside the window"), so memory stays O(t^2) and it exports to ONNX as
        plain MatMul + GatherElements for any length."""
        w = self.window
        assert w is not None
        t = q.shape[2]
        table = F.pad(self.emb_rel_k, (0, 0, 1, 1))  # [1, 2w+3, d], rows 0 and 2w+2 are zero
        rel = torch.matmul(q, table.transpose(-2, -1))  # [b, h, t, 2w+3]
        pos = torch.arange(t, device=q.device)
        bucket = (pos[None, :] - pos[:, None]).clamp(-w - 1, w + 1) + (w + 1)  # [t, t]
        return rel.gather(-1, bucket.expand(q.shape[0], q.shape[1], t, t))

    def _relative_values(self, p: torch.Tensor) -> torch.Tensor:
        """out_i += sum_{|r| <= w, 0 <= i+r < t} p[i, i+r] * emb_rel_v[r + w]."""
        w = self.window
        assert w is not None
        b, h, t, _ = p.shape
        pos = torch.arange(t, device=p.device)
        offs = torch.arange(-w, w + 1, device=p.device)
        col = pos[:, None] + offs[None, :]  # [t, 2w+1]: key index at each relative offset
        inside = (col >= 0) & (col < t)
        near = p.gather(-1, col.clamp(0, t - 1).expand(b, h, t, 2 * w + 1))  # [b, h, t, 2w+1]
        near = near * inside.to(p.dtype)
        return torch.matmul(near, self.emb_rel_v)  # [b, h, t, d]


class FFN(nn.Module):
    """Conv feed-forward with "same" padding (left (k-1)//2, right k//2), ReLU."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x, self.pad)))
        return self.conv_2(F.pad(x, self.pad))


class Encoder(nn.Module):
    """Post-norm transformer encoder with relative-position self-attention."""

    def __init__(
        self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(channels, n_heads, window=ATTN_WINDOW) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(LayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(LayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2
        ):
            x = norm1(x + attn(x, x))
            x = norm2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content frames attend to phones; the style vector is
    added at the 512-wide hidden level."""

    def __init__(self) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(MRTE_HIDDEN, MRTE_HEADS)
        self.c_pre = nn.Conv1d(MRTE_CHANNELS, MRTE_HIDDEN, 1)
        self.text_pre = nn.Conv1d(MRTE_CHANNELS, MRTE_HIDDEN, 1)
        self.c_post = nn.Conv1d(MRTE_HIDDEN, MRTE_CHANNELS, 1)

    def forward(self, content: torch.Tensor, text: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        content = self.c_pre(content)  # [b, 512, t]
        text = self.text_pre(text)  # [b, 512, p]
        return self.c_post(self.cross_attention(content, text) + content + style)


class TextEncoder(nn.Module):
    """``enc_p``: (codebook vectors at 50 Hz, phone ids, style) -> (m, logs) of the prior."""

    def __init__(self, config: SoVITSConfig) -> None:
        super().__init__()
        c = config
        self.out_channels = c.inter_channels
        self.ssl_proj = nn.Conv1d(SSL_DIM, c.hidden_channels, 1)
        half = c.n_layers // 2
        self.encoder_ssl = Encoder(c.hidden_channels, c.filter_channels, c.n_heads, half, c.kernel_size)
        self.encoder_text = Encoder(
            c.hidden_channels, c.filter_channels, c.n_heads, c.n_layers, c.kernel_size
        )
        self.text_embedding = nn.Embedding(c.n_symbols, c.hidden_channels)
        self.mrte = MRTE()
        self.encoder2 = Encoder(c.hidden_channels, c.filter_channels, c.n_heads, half, c.kernel_size)
        self.proj = nn.Conv1d(c.hidden_channels, 2 * c.inter_channels, 1)

    def forward(
        self, content: torch.Tensor, phones: torch.Tensor, style: torch.Tensor, speed: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.encoder_ssl(self.ssl_proj(content))  # [b, hidden, t]
        text = self.encoder_text(self.text_embedding(phones).transpose(1, 2))  # [b, hidden, p]
        y = self.encoder2(self.mrte(y, text, style))
        if speed != 1:
            # Official: linear resize (align_corners False) to int(t / speed) + 1 frames.
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
        m, logs = torch.split(self.proj(y), self.out_channels, dim=1)
        return m, logs
