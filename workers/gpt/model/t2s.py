"""The Text2Semantic decoder (GPT-SoVITS v2 "GPT"/T2S): modules, KV cache and forward pieces.

Parameter names mirror the official ``Text2SemanticDecoder`` so that ``state_dict()`` keys equal a
checkpoint's ``weight`` keys with the ``model.`` prefix stripped. The decoding loop lives in
``generate.py``; this module only knows how to embed, run the layers and score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import BERT_DIM, T2SConfig


def sine_table(length: int, dim: int) -> torch.Tensor:
    """Sinusoidal positions [length, dim], even columns sin, odd columns cos; computed in fp32 like
    the official table, cast by the caller."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # [n, 1]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class TokenEmbedding(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)


class SinePosition(nn.Module):
    """Sine table scaled by one learned scalar ``alpha`` (the official ``x_scale`` is 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))
        # A plain attribute, not a buffer: it is derived, absent from checkpoints, built on first
        # use (so a model built on the meta device has none) and regrown on demand.
        self._table: torch.Tensor | None = None

    def table(self, length: int, like: torch.Tensor) -> torch.Tensor:
        if self._table is None or self._table.shape[0] < length:
            # The official table starts at 4000 rows; ours grows by doubling past that.
            rows = 4000 if self._table is None else 2 * self._table.shape[0]
            self._table = sine_table(max(length, rows), self.dim)
        if self._table.device != like.device or self._table.dtype != like.dtype:
            self._table = self._table.to(device=like.device, dtype=like.dtype)
        return self._table

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [..., dim] plus alpha * table[positions]; positions has x's leading shape."""
        pe = self.table(int(positions.max()) + 1 if positions.numel() else 0, x)
        return x + self.alpha * pe[positions]


class SelfAttention(nn.Module):
    """Packed q|k|v projection named like ``nn.MultiheadAttention`` (the official checkpoint's
    ``in_proj_weight``/``in_proj_bias``/``out_proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: "KVCache | None", layer: int
    ) -> torch.Tensor:
        b, t, dim = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))  # [b, h, t, d]
        if cache is not None:
            k, v = cache.append(layer, k, v)  # [b, h, s, d] incl. history
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [b, h, t, d]
        return self.out_proj(out.transpose(1, 2).reshape(b, t, dim))


class Block(nn.Module):
    """Post-LN transformer layer (official ``norm_first=False``): LN(x + attn), LN(x + MLP)."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: "KVCache | None", layer: int
    ) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, mask, cache, layer))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class Stack(nn.Module):
    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Block(config.hidden_dim, config.num_heads, config.ffn_dim, config.layer_norm_eps)
            for _ in range(config.num_layers)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: "KVCache | None"
    ) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return x


@dataclass
class KVCache:
    """Keys and values of every layer, [layers, b, heads, capacity, head_dim], valid up to
    ``length``. Capacity grows in chunks so a step writes in place instead of concatenating."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0
    grow_by: int = 256

    @classmethod
    def empty(
        cls, config: T2SConfig, batch: int, capacity: int, device: torch.device, dtype: torch.dtype
    ) -> "KVCache":
        shape = (config.num_layers, batch, config.num_heads, capacity, config.head_dim)
        return cls(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values after ``length`` (``length`` itself moves once per forward, in
        ``Stack``) and return this layer's full history."""
        end = self.length + k.shape[2]
        if end > self.k.shape[3]:
            self.grow(end)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def grow(self, needed: int) -> None:
        """Make room for at least ``needed`` positions (one copy; amortised by ``grow_by``)."""
        extra = max(needed - self.k.shape[3], self.grow_by)
        pad = list(self.k.shape)
        pad[3] = extra
        self.k = torch.cat([self.k, self.k.new_zeros(pad)], dim=3)
        self.v = torch.cat([self.v, self.v.new_zeros(pad)], dim=3)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished sequences from the batch."""
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)


class Text2SemanticModel(nn.Module):
    """Official v2 T2S decoder, inference only. Build with a ``T2SConfig`` or ``load`` a ckpt."""

    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.bert_proj = nn.Linear(BERT_DIM, dim)
        self.ar_text_embedding = TokenEmbedding(config.phoneme_vocab_size, dim)
        self.ar_text_position = SinePosition(dim)
        self.ar_audio_embedding = TokenEmbedding(config.vocab_size, dim)
        self.ar_audio_position = SinePosition(dim)
        self.h = Stack(config)
        self.ar_predict_layer = nn.Linear(config.hidden_dim, config.vocab_size, bias=False)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "Text2SemanticModel":
        """Load an official GPT ``*.ckpt`` strictly; eval mode, no grads, on ``device`` in ``dtype``.
        Raises ``CheckpointError`` naming every missing, unexpected or mis-shaped key."""
        from .checkpoint import load_t2s

        return load_t2s(path, device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.ar_predict_layer.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ar_predict_layer.weight.dtype

    def embed_text(self, phones: torch.Tensor, bert: torch.Tensor) -> torch.Tensor:
        """phones [p] ids, bert [1024, p] -> [p, dim]: phone embedding + projected BERT + positions."""
        x = self.ar_text_embedding(phones) + self.bert_proj(bert.transpose(0, 1))
        return self.ar_text_position(x, torch.arange(phones.shape[0], device=phones.device))

    def embed_audio(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens and positions of the same shape [...] -> [..., dim]."""
        return self.ar_audio_position(self.ar_audio_embedding(tokens), positions)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x [b, t, dim] -> logits of the last position [b, vocab]. ``mask`` is a bool
        attention mask (True = may attend) broadcastable to [b, heads, t, s]."""
        hidden = self.h(x, mask, cache)  # [b, t, dim]
        return self.ar_predict_layer(hidden[:, -1])
