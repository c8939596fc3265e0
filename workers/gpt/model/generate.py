"""Autoregressive T2S decoding, batched, with the official masks, stop rules and return quirk.

Layout of one batch: each sequence is [text (phones + BERT, positions 0..p-1) | prompt semantic
tokens (positions 0..t_p-1)] and is LEFT-padded to the longest, so every sequence's next token
lands in the same column and one KV cache write serves the batch. Masks (True = may attend):
text rows see all of their own text only; audio rows see their text and the audio up to
themselves; padding columns are seen by nobody; padding rows see only themselves (so they stay
finite; their output is never read). Each sequence keeps its own positions, sampling settings,
noise generator and stop rule, and leaves the batch (its cache rows dropped) when it stops.

Official stop rules, per sequence, at decode step ``idx`` (0 = logits of the prefill):
* for idx < 11 the EOS column is dropped before sampling, so nothing stops before 11 tokens;
* stop if the argmax of the penalised logits is EOS, or the sample is EOS (the token is not
  kept);
* else keep the sample, and stop if more than ``early_stop_num`` tokens are now generated, or
  if this was the last allowed step (official cap: 1500 steps).

The official ``infer_panel`` returns (prompt ++ kept tokens, idx) and the webui decodes
``y[:, -idx:]``. ``idx`` is the step at which decoding stopped, so after an EOS stop that is
every kept token, but after an early-stop / step-cap stop one more token was kept than ``idx``
and the webui silently drops the FIRST generated token. Reference-free runs return idx 0, and
``y[:, -0:]`` is all of y. ``T2SResult.tokens`` holds every kept token;
``T2SResult.webui_tokens`` reproduces what the webui decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Sequence

import torch

from .config import BERT_DIM, MIN_STEPS_BEFORE_EOS
from .sampling import SamplingParams, apply_repetition_penalty, sample
from .t2s import KVCache, Text2SemanticModel

if TYPE_CHECKING:
    from .onnx_step import BoundStepSession

StopReason = Literal["eos", "early_stop", "max_steps"]


@dataclass(frozen=True)
class T2SRequest:
    """One segment to decode.

    phones: [p] int64 phone ids, prompt text phones followed by target phones (official order).
    bert: [1024, p] BERT features aligned with ``phones`` (zeros for non-Chinese text).
    prompt: [t_p] int64 semantic ids of the reference audio; None = reference-free mode.
    seed: seeds this request's own noise generator.
    """

    phones: torch.Tensor
    bert: torch.Tensor
    prompt: torch.Tensor | None = None
    seed: int = 0
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class T2SResult:
    """tokens: [n] int64 (CPU) every generated token kept, EOS excluded. official_idx: the
    ``idx`` the official ``infer_panel`` would return (0 when reference-free)."""

    tokens: torch.Tensor
    stop_reason: StopReason
    official_idx: int
    prompt: torch.Tensor | None

    @property
    def webui_tokens(self) -> torch.Tensor:
        """What the official webui hands to SoVITS: ``(prompt ++ tokens)[-idx:]`` (see module doc)."""
        prompt = self.prompt if self.prompt is not None else self.tokens.new_zeros(0)
        y = torch.cat([prompt.to(self.tokens), self.tokens])
        return y if self.official_idx == 0 else y[-self.official_idx :]


def _pack(
    seqs: list[torch.Tensor], text_lens: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad [n_i, dim] sequences -> x [b, L, dim], mask [b, 1, L, L], offsets [b]."""
    device = seqs[0].device
    lengths = torch.tensor([s.shape[0] for s in seqs], device=device)
    width = int(lengths.max())
    offsets = width - lengths
    x = seqs[0].new_zeros(len(seqs), width, seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, width - s.shape[0] :] = s
    row = torch.arange(width, device=device).view(1, -1, 1)
    col = torch.arange(width, device=device).view(1, 1, -1)
    start = offsets.view(-1, 1, 1)
    text_end = start + torch.tensor(text_lens, device=device).view(-1, 1, 1)
    real = (col >= start) & ((col < text_end) | ((col <= row) & (row >= text_end)))
    mask = torch.where(row < start, row == col, real)  # [b, L, L]
    return x, mask.unsqueeze(1), offsets


class _Decoder(Protocol):
    def first(self) -> torch.Tensor: ...
    def next(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...
    def keep(self, rows: torch.Tensor) -> None: ...


class _CachedDecoder:
    """Prefill once, then one position per step through the KV cache."""

    def __init__(
        self,
        model: Text2SemanticModel,
        texts: list[torch.Tensor],
        prompts: list[torch.Tensor],
        budget: int,
        grow_by: int = 256,
    ) -> None:
        self.model = model
        seqs = [
            torch.cat([t, model.embed_audio(p, torch.arange(p.shape[0], device=p.device))])
            for t, p in zip(texts, prompts)
        ]
        self.x, self.mask, self.offsets = _pack(seqs, [t.shape[0] for t in texts])
        self.cache = KVCache.empty(
            model.config, len(seqs), self.x.shape[1] + min(budget, grow_by), model.device, model.dtype
        )
        self.cache.grow_by = grow_by

    def first(self) -> torch.Tensor:
        return self.model(self.x, self.mask, self.cache)

    def next(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_audio(tokens.unsqueeze(1), positions.unsqueeze(1))  # [b, 1, dim]
        mask = None
        if bool((self.offsets > 0).any()):
            cols = torch.arange(self.cache.length + 1, device=self.offsets.device)
            mask = (cols.unsqueeze(0) >= self.offsets.unsqueeze(1)).view(len(self.offsets), 1, 1, -1)
        return self.model(x, mask, self.cache)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep_rows(rows)
        self.offsets = self.offsets[rows]


class _BoundDecoder(_CachedDecoder):
    """Prefill in torch, then every step in ONNX Runtime (``onnx_step.BoundStepSession``), which
    reads the KV cache tensors in place and returns only the new position's keys and values; we
    write those into the cache's next column. The cache grows in small chunks because the graph
    scores every column of it (masked ones included)."""

    def __init__(
        self,
        model: Text2SemanticModel,
        texts: list[torch.Tensor],
        prompts: list[torch.Tensor],
        budget: int,
        session: "BoundStepSession",
    ) -> None:
        super().__init__(model, texts, prompts, budget, grow_by=32)
        self.session = session

    def first(self) -> torch.Tensor:
        logits = super().first()
        self._bind()
        return logits

    def _bind(self) -> None:
        """(Re)bind every input and output: after the prefill, a growth or a batch change."""
        cache, cfg = self.cache, self.model.config
        layers, b, heads, capacity, head_dim = cache.k.shape
        cols = torch.arange(capacity, device=cache.k.device).unsqueeze(0)
        self.key_mask = (cols >= self.offsets.unsqueeze(1)) & (cols < cache.length)  # [b, cap]
        self.tokens = torch.zeros(b, dtype=torch.long, device=cache.k.device)
        self.positions = torch.zeros_like(self.tokens)
        self.logits = cache.k.new_empty(b, cfg.vocab_size)
        self.new_k = cache.k.new_empty(layers, b, heads, head_dim)
        self.new_v = torch.empty_like(self.new_k)
        self.binding = self.session.binding()
        bind = self.session.bind
        for name, tensor in (
            ("tokens", self.tokens),
            ("positions", self.positions),
            ("past_k", cache.k),
            ("past_v", cache.v),
            ("key_mask", self.key_mask),
        ):
            bind(self.binding, name, tensor)
        for name, tensor in (("logits", self.logits), ("new_k", self.new_k), ("new_v", self.new_v)):
            bind(self.binding, name, tensor, output=True)

    def next(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The returned logits live in a bound buffer that the following step overwrites."""
        cache = self.cache
        if cache.length == cache.k.shape[3]:
            cache.grow(cache.length + 1)
            self._bind()
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.session.run(self.binding)
        cache.k[:, :, :, cache.length] = self.new_k
        cache.v[:, :, :, cache.length] = self.new_v
        self.key_mask[:, cache.length] = True
        cache.length += 1
        return self.logits

    def keep(self, rows: torch.Tensor) -> None:
        super().keep(rows)
        self._bind()


class _RecomputeDecoder:
    """No cache: every step embeds and runs the whole sequence again (benchmark baseline)."""

    def __init__(
        self,
        model: Text2SemanticModel,
        phones: list[torch.Tensor],
        berts: list[torch.Tensor],
        prompts: list[torch.Tensor],
    ) -> None:
        self.model = model
        self.phones, self.berts, self.audio = phones, berts, prompts

    def _run(self) -> torch.Tensor:
        texts = [self.model.embed_text(p, b) for p, b in zip(self.phones, self.berts)]
        seqs = [
            torch.cat([t, self.model.embed_audio(a, torch.arange(a.shape[0], device=a.device))])
            for t, a in zip(texts, self.audio)
        ]
        x, mask, _ = _pack(seqs, [t.shape[0] for t in texts])
        return self.model(x, mask, None)

    def first(self) -> torch.Tensor:
        return self._run()

    def next(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        self.audio = [torch.cat([a, t.view(1)]) for a, t in zip(self.audio, tokens)]
        return self._run()

    def keep(self, rows: torch.Tensor) -> None:
        picked = rows.tolist()
        self.phones = [self.phones[i] for i in picked]
        self.berts = [self.berts[i] for i in picked]
        self.audio = [self.audio[i] for i in picked]


def _check(model: Text2SemanticModel, r: T2SRequest) -> None:
    cfg = model.config
    if r.phones.dim() != 1 or r.phones.numel() == 0 or r.phones.is_floating_point():
        raise ValueError(f"phones must be a non-empty 1-D integer tensor, got {tuple(r.phones.shape)}")
    if int(r.phones.min()) < 0 or int(r.phones.max()) >= cfg.phoneme_vocab_size:
        raise ValueError(f"phone ids must lie in [0, {cfg.phoneme_vocab_size})")
    if tuple(r.bert.shape) != (BERT_DIM, r.phones.shape[0]):
        raise ValueError(f"bert must be [{BERT_DIM}, {r.phones.shape[0]}], got {tuple(r.bert.shape)}")
    if r.prompt is not None:
        if r.prompt.dim() != 1 or r.prompt.is_floating_point():
            raise ValueError("prompt must be a 1-D integer tensor of semantic ids")
        if r.prompt.numel() and (int(r.prompt.min()) < 0 or int(r.prompt.max()) >= cfg.eos):
            raise ValueError(f"prompt ids must lie in [0, {cfg.eos})")


@torch.no_grad()  # not inference_mode: callers may edit the returned tensors in place
def generate(
    model: Text2SemanticModel,
    requests: Sequence[T2SRequest],
    use_cache: bool = True,
    step: "BoundStepSession | None" = None,
    on_token: Callable[[int, int], None] | None = None,
) -> list[T2SResult]:
    """Decode every request in one batch; results in request order. ``use_cache=False``
    recomputes the whole sequence each step (benchmark baseline, same tokens). ``step``: run the
    decode steps in ONNX Runtime with that session (exported from this model by
    ``onnx_step.export_bound_step``) instead of torch; the prefill and the sampler stay in torch.
    ``on_token(request_index, token)`` is called for every token as soon as it is kept (token
    streaming: the same tokens, in order, that end in ``T2SResult.tokens``)."""
    if not requests:
        return []
    for r in requests:
        _check(model, r)
    cfg, device = model.config, model.device
    n = len(requests)
    phones = [r.phones.to(device=device, dtype=torch.long) for r in requests]
    berts = [r.bert.to(device=device, dtype=model.dtype) for r in requests]
    prompts = [
        (r.prompt if r.prompt is not None else torch.zeros(0)).to(device=device, dtype=torch.long)
        for r in requests
    ]
    params = [r.params for r in requests]
    early = [cfg.early_stop_num if p.early_stop_num is None else p.early_stop_num for p in params]
    max_steps = [p.max_steps for p in params]

    decoder: _Decoder
    if use_cache:
        texts = [model.embed_text(p, b) for p, b in zip(phones, berts)]
        if step is not None:
            decoder = _BoundDecoder(model, texts, prompts, max(max_steps), step)
        else:
            decoder = _CachedDecoder(model, texts, prompts, max(max_steps))
    else:
        decoder = _RecomputeDecoder(model, phones, berts, prompts)

    rows = list(range(n))  # request index of each live batch row
    generators = [torch.Generator().manual_seed(r.seed) for r in requests]
    top_k = torch.tensor([p.top_k for p in params], device=device)
    top_p = torch.tensor([p.top_p for p in params], device=device)
    temperature = torch.tensor([p.temperature for p in params], device=device)
    penalty = torch.tensor([p.repetition_penalty for p in params], device=device)
    prompt_lens = torch.tensor([p.shape[0] for p in prompts], device=device)
    seen = torch.zeros(n, cfg.vocab_size, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        seen[i, p] = True
    kept: list[list[int]] = [[] for _ in range(n)]
    results: list[T2SResult | None] = [None] * n

    def finish(row: int, reason: StopReason, idx: int) -> None:
        prompt = requests[row].prompt
        results[row] = T2SResult(
            tokens=torch.tensor(kept[row], dtype=torch.long),
            stop_reason=reason,
            official_idx=0 if prompt is None else idx,
            prompt=None if prompt is None else prompt.detach().to("cpu", torch.long),
        )

    logits = decoder.first()
    for idx in range(max(max_steps)):
        scores = logits.float()  # [b, vocab]
        if idx < MIN_STEPS_BEFORE_EOS:
            scores = scores[:, : cfg.eos]
        scores = apply_repetition_penalty(scores, seen[:, : scores.shape[1]], penalty)
        best = scores.argmax(dim=-1).tolist()
        picked = sample(scores, top_k, top_p, temperature, [generators[r] for r in rows])
        picked_list = picked.tolist()
        live: list[int] = []
        for j, row in enumerate(rows):
            token = picked_list[j]
            if best[j] == cfg.eos or token == cfg.eos:
                finish(row, "eos", idx)
                continue
            kept[row].append(token)
            if on_token is not None:
                on_token(row, token)
            if early[row] != -1 and len(kept[row]) > early[row]:
                finish(row, "early_stop", idx)
            elif idx == max_steps[row] - 1:
                finish(row, "max_steps", idx)
            else:
                live.append(j)
        if not live:
            break
        if len(live) < len(rows):
            keep = torch.tensor(live, device=device)
            decoder.keep(keep)
            picked, top_k, top_p = picked[keep], top_k[keep], top_p[keep]
            temperature, penalty = temperature[keep], penalty[keep]
            prompt_lens, seen = prompt_lens[keep], seen[keep]
            rows = [rows[j] for j in live]
        seen[torch.arange(len(rows), device=device), picked] = True
        # The token sampled at step idx sits at audio position t_p + idx.
        logits = decoder.next(picked, prompt_lens + idx)
    return [r for r in results if r is not None]
