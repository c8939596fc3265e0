"""The official T2S sampler, vectorised over a batch, with per-request noise generators.

Order (official ``AR/models/utils.py`` ``logits_to_probs`` + ``multinomial_sample_one_no_sync``):
repetition penalty on every id already in the sequence, prompt included, each id once (divide a
positive logit, multiply a negative one); top-p (drop sorted tokens whose cumulative probability
exceeds p, always keeping the best, no shift); divide by max(temperature, 1e-5); top-k (drop
logits below the k-th largest); softmax; then ``argmax(probs / q)`` with q ~ Exp(1). That last
step is a draw from ``probs`` (the exponential-race trick); we take q from a per-request CPU
``torch.Generator`` instead of the global RNG, so a fixed seed gives the same tokens on any
device and in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import MAX_DECODE_STEPS


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings. Defaults are the official API's (top_k 15, top_p 1,
    temperature 1, repetition_penalty 1.35); the webui defaults to top_k 20 / top_p 0.6 /
    temperature 0.6. ``early_stop_num`` None means the model's ``50 * max_sec``; -1 turns it off
    (official semantics). ``max_steps`` is the official cap of 1500 decode steps unless lowered."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    early_stop_num: int | None = None
    max_steps: int = MAX_DECODE_STEPS

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not self.top_p > 0:
            raise ValueError(f"top_p must be > 0, got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.early_stop_num is not None and self.early_stop_num < -1:
            raise ValueError(f"early_stop_num must be >= -1, got {self.early_stop_num}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """logits [b, v], seen [b, v] bool, penalty [b] -> penalised copy. A seen id is penalised once
    however often it occurred (the official gather/scatter writes the same value twice)."""
    p = penalty.to(logits.dtype).unsqueeze(1)  # [b, 1]
    penalised = torch.where(logits < 0, logits * p, logits / p)
    return torch.where(seen, penalised, logits)


def _top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    # Rows with p >= 1 are skipped by the official code; an infinite threshold does the same even
    # when rounding pushes the cumulative sum past 1.
    threshold = torch.where(top_p < 1.0, top_p, torch.full_like(top_p, float("inf")))
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)  # [b, v]
    drop_sorted = cumulative > threshold.unsqueeze(1)
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    k = top_k.clamp(max=logits.shape[-1])
    values = torch.topk(logits, int(k.max()), dim=-1).values  # [b, k_max], descending
    pivot = values.gather(1, (k - 1).unsqueeze(1))  # [b, 1]: each row's k-th largest
    return torch.where(logits < pivot, float("-inf"), logits)


def sample(
    logits: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    temperature: torch.Tensor,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """logits [b, v] already penalised; per-row top_k [b] long, top_p [b], temperature [b] ->
    sampled ids [b] (int64). One Exp(1) vector of v values is drawn from each row's generator."""
    if bool((top_p < 1.0).any()):
        logits = _top_p(logits, top_p)
    t = temperature.clamp(min=1e-5)
    if bool((t == t[0]).all()):
        logits = logits / float(t[0])  # the official divides by a Python float
    else:
        logits = logits / t.to(logits.dtype).unsqueeze(1)
    logits = _top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    noise = torch.stack(
        [torch.empty(logits.shape[-1]).exponential_(1.0, generator=g) for g in generators]
    ).to(device=probs.device, dtype=probs.dtype)  # [b, v]
    return torch.argmax(probs / noise, dim=-1)
