"""T2S decoding: the official sampler rules, stop rules and return quirk, determinism, batching.

A tiny random model (2 layers, 64 wide) keeps every test fast; official numerics are covered by
test_t2s_parity.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from workers.gpt.model import (
    SamplingParams,
    T2SConfig,
    T2SRequest,
    Text2SemanticModel,
    generate,
    random_model,
)
from workers.gpt.model.sampling import apply_repetition_penalty, sample

SMALL = T2SConfig(embedding_dim=64, hidden_dim=64, num_heads=4, num_layers=2)
EOS = SMALL.eos


@pytest.fixture(scope="module")
def model() -> Text2SemanticModel:
    torch.set_num_threads(1)
    return random_model(SMALL, seed=3)


def _request(
    g: torch.Generator, phones: int, prompt: int | None, seed: int = 0, **params: object
) -> T2SRequest:
    return T2SRequest(
        phones=torch.randint(1, SMALL.phoneme_vocab_size, (phones,), generator=g),
        bert=torch.randn(1024, phones, generator=g),
        prompt=None if prompt is None else torch.randint(0, 1024, (prompt,), generator=g),
        seed=seed,
        params=SamplingParams(**params),  # type: ignore[arg-type]
    )


class _EosHook:
    """Official-style output-head hook: force EOS to win from a given step on (or never)."""

    def __init__(self, model: Text2SemanticModel, from_step: int | None) -> None:
        self.step, self.from_step = 0, from_step
        self.handle = model.ar_predict_layer.register_forward_hook(self)

    def __call__(self, _m: object, _i: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, EOS] = 100.0 if self.from_step is not None and self.step >= self.from_step else float("-inf")
        self.step += 1
        return out

    def __enter__(self) -> "_EosHook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# --- sampler rules, checked by hand ------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -0.25]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, -2.0, 0.5, -0.25]]


def _probs_logits(*probs: float) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


def _draws(logits: torch.Tensor, n: int, top_k: int, top_p: float, temperature: float) -> list[int]:
    rows = logits.expand(n, -1)
    out = sample(
        rows,
        torch.full((n,), top_k),
        torch.full((n,), top_p),
        torch.full((n,), temperature),
        [torch.Generator().manual_seed(s) for s in range(n)],
    )
    return out.tolist()


def test_top_p_keeps_tokens_up_to_the_threshold_without_the_usual_shift() -> None:
    logits = _probs_logits(0.5, 0.3, 0.15, 0.05)  # cumulative 0.5, 0.8, 0.95, 1.0
    # Official rule: drop sorted tokens whose cumulative probability exceeds p (keep the first).
    assert set(_draws(logits, 300, top_k=4, top_p=0.7, temperature=1.0)) == {0}
    assert set(_draws(logits, 300, top_k=4, top_p=0.85, temperature=1.0)) == {0, 1}


def test_top_k_and_zero_temperature() -> None:
    logits = _probs_logits(0.1, 0.4, 0.3, 0.2)
    assert set(_draws(logits, 300, top_k=2, top_p=1.0, temperature=1.0)) == {1, 2}
    assert set(_draws(logits, 50, top_k=4, top_p=1.0, temperature=0.0)) == {1}


def test_exponential_race_draws_from_the_distribution() -> None:
    probs = (0.5, 0.3, 0.15, 0.05)
    n = 4000
    draws = torch.tensor(_draws(_probs_logits(*probs), n, top_k=4, top_p=1.0, temperature=1.0))
    freq = torch.bincount(draws, minlength=4).double() / n
    # 4 standard errors at n=4000 is at most 0.032.
    assert torch.allclose(freq, torch.tensor(probs, dtype=torch.double), atol=0.032)


def test_each_batch_row_uses_its_own_settings() -> None:
    logits = _probs_logits(0.1, 0.4, 0.3, 0.2).expand(2, -1)
    for seed in range(20):
        picked = sample(
            logits,
            torch.tensor([1, 3]),
            torch.tensor([1.0, 1.0]),
            torch.tensor([1.0, 1.0]),
            [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)],
        )
        assert picked[0] == 1 and picked[1] in (1, 2, 3)


# --- stop rules and the official return value ---------------------------------------------------


def test_no_eos_before_eleven_tokens_and_eos_is_not_kept(model: Text2SemanticModel) -> None:
    req = _request(torch.Generator().manual_seed(1), phones=12, prompt=20, top_k=1)
    with _EosHook(model, from_step=0):
        result = generate(model, [req])[0]
    # Steps 0..10 cannot pick EOS (column dropped); step 11 picks it and stops.
    assert result.stop_reason == "eos"
    assert len(result.tokens) == 11 and int(result.tokens.max()) < EOS
    assert result.official_idx == 11
    assert torch.equal(result.webui_tokens, result.tokens)


def test_eos_by_argmax_stops_even_if_the_sample_is_not_eos(model: Text2SemanticModel) -> None:
    # top_k=3 with a huge EOS logit: EOS has almost all the mass, but the rule also fires on the
    # argmax alone; either way the stop happens at step 15 and the step's token is not kept.
    req = _request(torch.Generator().manual_seed(2), phones=12, prompt=20, top_k=3)
    with _EosHook(model, from_step=15):
        result = generate(model, [req])[0]
    assert (result.stop_reason, len(result.tokens), result.official_idx) == ("eos", 15, 15)


def test_early_stop_keeps_one_token_more_and_webui_drops_the_first(model: Text2SemanticModel) -> None:
    req = _request(torch.Generator().manual_seed(3), phones=10, prompt=8, top_k=1, early_stop_num=20)
    with _EosHook(model, from_step=None):
        result = generate(model, [req])[0]
    # Official: stop once more than early_stop_num tokens exist -> 21 kept, idx 20, and the
    # webui's y[:, -idx:] loses the first generated token.
    assert result.stop_reason == "early_stop"
    assert len(result.tokens) == 21 and result.official_idx == 20
    assert torch.equal(result.webui_tokens, result.tokens[1:])


def test_step_cap_has_the_same_quirk(model: Text2SemanticModel) -> None:
    req = _request(torch.Generator().manual_seed(4), phones=10, prompt=8, top_k=1, max_steps=25)
    with _EosHook(model, from_step=None):
        result = generate(model, [req])[0]
    assert (result.stop_reason, len(result.tokens), result.official_idx) == ("max_steps", 25, 24)
    assert torch.equal(result.webui_tokens, result.tokens[1:])


def test_reference_free_returns_idx_zero_and_webui_keeps_everything(model: Text2SemanticModel) -> None:
    req = _request(torch.Generator().manual_seed(5), phones=15, prompt=None, top_k=1, early_stop_num=20)
    result = generate(model, [req])[0]
    assert result.official_idx == 0 and result.prompt is None
    assert torch.equal(result.webui_tokens, result.tokens)


def test_repetition_penalty_sees_the_prompt(model: Text2SemanticModel) -> None:
    """Greedy picks that repeat prompt ids without a penalty are avoided under a huge one."""
    g = torch.Generator().manual_seed(6)
    base = _request(g, phones=14, prompt=12, top_k=1, repetition_penalty=1.0, max_steps=12)
    with _EosHook(model, from_step=None):
        free = generate(model, [base])[0].tokens
    # Put the first free picks into the prompt: unpenalised decoding still repeats some of them.
    prompt = torch.cat([base.prompt, free[:3]])
    runs = {}
    for penalty in (1.0, 1e6):
        params = SamplingParams(top_k=1, repetition_penalty=penalty, max_steps=12)
        req = T2SRequest(base.phones, base.bert, prompt, params=params)
        with _EosHook(model, from_step=None):
            runs[penalty] = set(generate(model, [req])[0].tokens.tolist())
    assert runs[1.0] & set(prompt.tolist())
    assert not runs[1e6] & set(prompt.tolist())


# --- determinism and batching -------------------------------------------------------------------


def _sampling_requests(seeds: list[int]) -> list[T2SRequest]:
    g = torch.Generator().manual_seed(11)
    shapes = [(30, 25), (12, 7), (20, None), (8, 40)]
    return [
        _request(g, p, t, seed=s, top_k=15, top_p=0.9, temperature=0.8, max_steps=40)
        for (p, t), s in zip(shapes, seeds)
    ]


def test_fixed_seed_gives_identical_tokens(model: Text2SemanticModel) -> None:
    first = generate(model, _sampling_requests([1, 2, 3, 4]))
    again = generate(model, _sampling_requests([1, 2, 3, 4]))
    other = generate(model, _sampling_requests([5, 6, 7, 8]))
    for a, b in zip(first, again):
        assert torch.equal(a.tokens, b.tokens) and a.stop_reason == b.stop_reason
    assert any(not torch.equal(a.tokens, c.tokens) for a, c in zip(first, other))


def test_sampled_batch_equals_single_runs(model: Text2SemanticModel) -> None:
    requests = _sampling_requests([1, 2, 3, 4])
    batch = generate(model, requests)
    for req, got in zip(requests, batch):
        assert torch.equal(generate(model, [req])[0].tokens, got.tokens)


def test_greedy_batch_of_four_equals_four_single_runs(model: Text2SemanticModel) -> None:
    g = torch.Generator().manual_seed(7)
    requests = [
        _request(g, 40, 30, top_k=1, max_steps=100),
        _request(g, 17, 5, top_k=1, max_steps=100, early_stop_num=40),
        _request(g, 25, None, top_k=1, max_steps=100),  # reference-free next to prompted ones
        _request(g, 9, 50, top_k=1, max_steps=60),
    ]
    singles = [generate(model, [r])[0] for r in requests]
    batch = generate(model, requests)
    for one, many in zip(singles, batch):
        assert torch.equal(one.tokens, many.tokens)
        assert (one.stop_reason, one.official_idx) == (many.stop_reason, many.official_idx)
    # The batch really had sequences leaving at different steps, for different reasons.
    assert len({len(r.tokens) for r in batch}) >= 3
    assert {r.stop_reason for r in batch} >= {"eos", "early_stop", "max_steps"}


def test_no_cache_batch_equals_cached_batch(model: Text2SemanticModel) -> None:
    g = torch.Generator().manual_seed(8)
    requests = [_request(g, 14, 9, top_k=1, max_steps=20), _request(g, 6, None, top_k=1, max_steps=15)]
    cached = generate(model, requests)
    recomputed = generate(model, requests, use_cache=False)
    for a, b in zip(cached, recomputed):
        assert torch.equal(a.tokens, b.tokens)


def test_bad_requests_are_refused(model: Text2SemanticModel) -> None:
    g = torch.Generator().manual_seed(9)
    good = _request(g, 5, 4)
    with pytest.raises(ValueError, match="bert"):
        generate(model, [T2SRequest(good.phones, good.bert[:, :3], good.prompt)])
    with pytest.raises(ValueError, match="phone ids"):
        generate(model, [T2SRequest(good.phones + 1000, good.bert, good.prompt)])
    with pytest.raises(ValueError, match="prompt ids"):
        generate(model, [T2SRequest(good.phones, good.bert, torch.tensor([EOS]))])
    with pytest.raises(ValueError, match="top_k"):
        SamplingParams(top_k=0)


def test_cache_growth_keeps_long_decodes_exact(model: Text2SemanticModel) -> None:
    # The cache starts with room for 256 new tokens and grows after that; 300 steps cross it.
    g = torch.Generator().manual_seed(10)
    requests = [_request(g, 6, 4, top_k=1, max_steps=300), _request(g, 3, None, top_k=1, max_steps=290)]
    with _EosHook(model, from_step=None):
        cached = generate(model, requests)
    with _EosHook(model, from_step=None):
        recomputed = generate(model, requests, use_cache=False)
    for a, b in zip(cached, recomputed):
        assert torch.equal(a.tokens, b.tokens) and len(a.tokens) in (300, 290)
