"""One T2S decode step as a pure function, for ONNX export: the KV cache goes in and comes out.

Inputs: tokens [b] int64 (the ids sampled last step), positions [b] int64 (their audio
positions), past_k / past_v [layers, b, heads, s, head_dim], key_mask [b, s + 1] bool (True = may
attend; False marks left padding). Outputs: logits [b, vocab] (raw output head, before the
sampler) and present_k / present_v with the new position appended [layers, b, heads, s + 1,
head_dim]. The prefill and the sampler stay in torch (``generate.py``); this graph is the part
that runs once per token. The sine position is computed in the graph, so positions are not
bounded by a table.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .t2s import Block, Text2SemanticModel


class DecodeStep(nn.Module):
    def __init__(self, model: Text2SemanticModel) -> None:
        super().__init__()
        self.model = model
        dim = model.config.hidden_dim
        # Same fp32 frequencies as ``sine_table``, so in-graph positions equal the table rows.
        inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.scale = 1.0 / math.sqrt(model.config.head_dim)

    def _attend(
        self, block: Block, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = block.self_attn
        b, _, dim = x.shape
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.view(b, 1, attn.heads, -1).transpose(1, 2) for z in (q, k, v))  # [b, h, 1, d]
        k = torch.cat([past_k, k], dim=2)  # [b, h, s + 1, d]
        v = torch.cat([past_v, v], dim=2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale  # [b, h, 1, s + 1]
        scores = scores.masked_fill(~keep, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [b, h, 1, d]
        return attn.out_proj(out.transpose(1, 2).reshape(b, 1, dim)), k, v

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        key_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        angle = positions.to(torch.float32).unsqueeze(1) * self.inv_freq  # [b, dim/2]
        pe = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(1).to(past_k.dtype)  # [b, dim]
        x = model.ar_audio_embedding(tokens) + model.ar_audio_position.alpha * pe
        x = x.unsqueeze(1)  # [b, 1, dim]
        keep = key_mask.view(key_mask.shape[0], 1, 1, -1)
        new_k, new_v = [], []
        for i, block in enumerate(model.h.layers):
            a, k, v = self._attend(block, x, past_k[i], past_v[i], keep)
            x = block.norm1(x + a)
            x = block.norm2(x + block.linear2(F.relu(block.linear1(x))))
            new_k.append(k)
            new_v.append(v)
        logits = model.ar_predict_layer(x[:, 0])
        return logits, torch.stack(new_k), torch.stack(new_v)


_INPUTS = ["tokens", "positions", "past_k", "past_v", "key_mask"]
_OUTPUTS = ["logits", "present_k", "present_v"]


def export_decode_step(
    model: Text2SemanticModel, path: str | Path, opset: int = 18, dynamo: bool = False
) -> None:
    """Write the decode step of ``model`` to ``path`` (dynamic batch and past length).

    ``dynamo=False`` uses the TorchScript exporter (deprecated by torch, but it needs no extra
    package); ``dynamo=True`` uses the torch.export-based one, which needs ``onnxscript``."""
    cfg = model.config
    step = DecodeStep(model).eval()
    b, s = 2, 5
    shape = (cfg.num_layers, b, cfg.num_heads, s, cfg.head_dim)
    past = torch.zeros(shape, dtype=model.dtype, device=model.device)
    args = (
        torch.zeros(b, dtype=torch.long, device=model.device),
        torch.arange(b, device=model.device),
        past,
        past.clone(),
        torch.ones(b, s + 1, dtype=torch.bool, device=model.device),
    )
    with torch.no_grad():
        if dynamo:
            batch, length = torch.export.Dim("batch"), torch.export.Dim("past")
            program = torch.onnx.export(
                step,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=_INPUTS,
                output_names=_OUTPUTS,
                dynamic_shapes={
                    "tokens": {0: batch},
                    "positions": {0: batch},
                    "past_k": {1: batch, 3: length},
                    "past_v": {1: batch, 3: length},
                    "key_mask": {0: batch, 1: length + 1},
                },
            )
            assert program is not None
            program.save(str(path))
            return
        cache_axes = {1: "batch", 3: "past"}
        torch.onnx.export(
            step,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=_INPUTS,
            output_names=_OUTPUTS,
            dynamic_axes={
                "tokens": {0: "batch"},
                "positions": {0: "batch"},
                "past_k": cache_axes,
                "past_v": cache_axes,
                "key_mask": {0: "batch", 1: "past_plus_one"},
                "logits": {0: "batch"},
                "present_k": {1: "batch", 3: "past_plus_one"},
                "present_v": {1: "batch", 3: "past_plus_one"},
            },
        )
