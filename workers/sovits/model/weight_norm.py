"""Weight norm as stored by the official checkpoints, folded away at load time.

The official convs use torch's old ``weight_norm(dim=0)``: a checkpoint holds ``<conv>.weight_g``
(one gain per slice of dim 0, shape ``[c0, 1, 1]``) and ``<conv>.weight_v`` (the direction); the
conv's weight is ``g * v / ||v||`` with the norm over every dim but 0. Dim 0 is the output channel
of a Conv1d but the INPUT channel of a ConvTranspose1d (its weight is ``[in, out, k]``); the rule
is the same either way. Our modules hold the plain folded weight and carry a mark so the loader
knows which stored keys come as g/v pairs.
"""

from __future__ import annotations

import torch
from torch import nn

_MARK = "stored_with_weight_norm"


def mark(module: nn.Module) -> nn.Module:
    """Tag a conv whose weight the checkpoint stores as a ``weight_g``/``weight_v`` pair."""
    setattr(module, _MARK, True)
    return module


def marked_prefixes(model: nn.Module) -> list[str]:
    """Module names (state-dict prefixes) of every tagged conv in ``model``."""
    return [name for name, m in model.named_modules() if getattr(m, _MARK, False)]


def _norm_except_dim0(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)


def fold(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||``, computed as torch's weight-norm hook does (``v * (g / ||v||)``)."""
    return v * (g / _norm_except_dim0(v))


def unfold(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (g, v) pair that folds back to ``weight`` (g = ||weight||, v = weight)."""
    return _norm_except_dim0(weight), weight
