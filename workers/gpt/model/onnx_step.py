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
import warnings
from pathlib import Path
from typing import Any

import numpy as np
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


class BoundDecodeStep(DecodeStep):
    """The decode step for a fixed-capacity cache that the caller owns and ONNX Runtime reads
    in place (I/O binding): nothing is concatenated and only the new position comes back.

    Inputs: tokens [b], positions [b], past_k / past_v [layers, b, heads, cap, head_dim] (the
    caller's buffer; columns are read only where ``key_mask`` is True), key_mask [b, cap] bool.
    Outputs: logits [b, vocab], new_k / new_v [layers, b, heads, head_dim] (this position's keys
    and values, which the caller writes into column ``length`` of its buffer). The new position
    always attends to itself, so its score is computed apart from the cache's and the two are
    softmaxed together: the cache is never copied to append one column.
    """

    def _attend(
        self, block: Block, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = block.self_attn
        b, _, dim = x.shape
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.view(b, 1, attn.heads, -1).transpose(1, 2) for z in (q, k, v))  # [b, h, 1, d]
        past = torch.matmul(q, past_k.transpose(2, 3)) * self.scale  # [b, h, 1, cap]
        past = past.masked_fill(~keep, float("-inf"))
        own = (q * k).sum(dim=-1, keepdim=True) * self.scale  # [b, h, 1, 1]
        weights = torch.softmax(torch.cat([past, own], dim=-1), dim=-1)  # [b, h, 1, cap + 1]
        out = torch.matmul(weights[..., :-1], past_v) + weights[..., -1:] * v  # [b, h, 1, d]
        return attn.out_proj(out.transpose(1, 2).reshape(b, 1, dim)), k[:, :, 0], v[:, :, 0]


_BOUND_OUTPUTS = ["logits", "new_k", "new_v"]


def export_bound_step(model: Text2SemanticModel, path: str | Path, opset: int = 18) -> Path:
    """Write ``BoundDecodeStep`` of ``model`` to ``path`` (dynamic batch and capacity; the
    TorchScript exporter, which needs no extra package). The graph is in ``model``'s dtype."""
    path = Path(path)
    cfg = model.config
    step = BoundDecodeStep(model).eval()
    b, cap = 2, 5
    shape = (cfg.num_layers, b, cfg.num_heads, cap, cfg.head_dim)
    past = torch.zeros(shape, dtype=model.dtype, device=model.device)
    args = (
        torch.zeros(b, dtype=torch.long, device=model.device),
        torch.arange(b, device=model.device),
        past,
        past.clone(),
        torch.ones(b, cap, dtype=torch.bool, device=model.device),
    )
    cache_axes = {1: "batch", 3: "capacity"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(
            step,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=_INPUTS,
            output_names=_BOUND_OUTPUTS,
            dynamic_axes={
                "tokens": {0: "batch"},
                "positions": {0: "batch"},
                "past_k": cache_axes,
                "past_v": cache_axes,
                "key_mask": {0: "batch", 1: "capacity"},
                "logits": {0: "batch"},
                "new_k": {1: "batch"},
                "new_v": {1: "batch"},
            },
        )
    return path


_ORT_TYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.bool: np.bool_}


class BoundStepSession:
    """An ONNX Runtime session for ``export_bound_step`` graphs, with every input and output
    bound to torch tensors by pointer (CPU or CUDA memory, so no copy either way).

    ``threads`` 0 lets ONNX Runtime pick; spinning is off because these hosts are shared and a
    spinning pool steals the core the other thread needs."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = torch.device(device)

    def bind(self, binding: Any, name: str, tensor: torch.Tensor, output: bool = False) -> None:
        if not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous to be bound in place")
        kind = "cuda" if tensor.device.type == "cuda" else "cpu"
        index = tensor.device.index or 0
        args = (name, kind, index, _ORT_TYPES[tensor.dtype], list(tensor.shape), tensor.data_ptr())
        (binding.bind_output if output else binding.bind_input)(*args)

    def binding(self) -> Any:
        return self.session.io_binding()

    def run(self, binding: Any) -> None:
        self.session.run_with_iobinding(binding)


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantization of an exported step (weights int8 per tensor, activations
    quantized on the fly): a quarter of the bytes read per step. Opt-in only: it changes the
    logits (bench/render.py prints token agreement and logit/waveform distances vs fp32)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its pre-processing hint
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)
