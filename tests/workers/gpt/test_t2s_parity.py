"""T2S numerics against official outputs (official classes, random fp16 weights): parity-small
(v2, 732-phone vocabulary) and parity-v1 (v1, 512-row phone embedding, 322-symbol ids); both sets
use the same file names, so every test runs on both.

The official run recorded the raw output-head logits with a forward hook on ``ar_predict_layer``
(masking EOS, or forcing tokens); we hook the same module of ours the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.gpt.model import SamplingParams, T2SRequest, Text2SemanticModel, generate
from tests.support.official import PARITY, parity_v1

# What the README states (measured: at most 4.8e-7, fp32 CPU, v2 and v1).
PARITY_ATOL = 1e-6

CHECKPOINTS = {"v2": "s1_small.ckpt", "v1": "s1_v1_small.ckpt"}


@dataclass(frozen=True)
class ParitySet:
    folder: Path
    checkpoint: Path
    phoneme_vocab_size: int


@pytest.fixture(scope="module", params=["v2", "v1"])
def parity(request: pytest.FixtureRequest) -> ParitySet:
    folder = PARITY if request.param == "v2" else parity_v1()
    return ParitySet(folder, folder / CHECKPOINTS[request.param], 732 if request.param == "v2" else 512)


@pytest.fixture(scope="module")
def model(parity: ParitySet) -> Text2SemanticModel:
    torch.set_num_threads(1)
    loaded = Text2SemanticModel.load(parity.checkpoint)
    assert loaded.config.phoneme_vocab_size == parity.phoneme_vocab_size
    return loaded


def _request(parity: ParitySet, params: SamplingParams) -> T2SRequest:
    inputs = parity.folder / "inputs"
    phones = np.concatenate([np.load(inputs / "phones_prompt.npy"), np.load(inputs / "phones_target.npy")])
    return T2SRequest(
        phones=torch.from_numpy(phones),
        bert=torch.from_numpy(np.load(inputs / "bert.npy")),
        prompt=torch.from_numpy(np.load(inputs / "prompt_semantic.npy")),
        params=params,
    )


def _expected(parity: ParitySet, name: str) -> np.ndarray:
    return np.load(parity.folder / "expected" / name)


def _run_hooked(
    model: Text2SemanticModel, parity: ParitySet, params: SamplingParams, edit, use_cache: bool = True
):
    """Run ``generate`` recording raw logits; ``edit(step, raw)`` returns what the loop sees."""
    seen: list[torch.Tensor] = []

    def hook(_module, _inputs, out):
        seen.append(out.detach().clone())
        return edit(len(seen) - 1, out)

    handle = model.ar_predict_layer.register_forward_hook(hook)
    try:
        result = generate(model, [_request(parity, params)], use_cache=use_cache)[0]
    finally:
        handle.remove()
    return result, torch.cat(seen).numpy()


def _mask_eos(_step: int, out: torch.Tensor) -> torch.Tensor:
    out = out.clone()
    out[:, -1] = float("-inf")
    return out


def test_forced_logits_match_official(model: Text2SemanticModel, parity: ParitySet) -> None:
    forced = _expected(parity, "../inputs/forced_tokens.npy")

    def force(step: int, out: torch.Tensor) -> torch.Tensor:
        only = torch.full_like(out, float("-inf"))
        only[:, int(forced[step])] = 0.0
        return only

    params = SamplingParams(top_k=1, repetition_penalty=1.0, max_steps=len(forced))
    result, logits = _run_hooked(model, parity, params, force)
    assert result.tokens.tolist() == forced.tolist()
    expected = _expected(parity, "t2s_forced_logits.npy")
    assert logits.shape == expected.shape == (30, 1025)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=PARITY_ATOL)


@pytest.mark.parametrize("penalty", ["1.0", "1.35"])
def test_greedy_tokens_and_logits_match_official(
    model: Text2SemanticModel, parity: ParitySet, penalty: str
) -> None:
    params = SamplingParams(
        top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=float(penalty), max_steps=30
    )
    result, logits = _run_hooked(model, parity, params, _mask_eos)
    assert result.tokens.tolist() == _expected(parity, f"t2s_greedy_tokens_rep{penalty}.npy").tolist()
    np.testing.assert_allclose(
        logits, _expected(parity, f"t2s_greedy_logits_rep{penalty}.npy"), rtol=0, atol=PARITY_ATOL
    )
    assert result.stop_reason == "max_steps"


def test_no_cache_path_gives_official_greedy_tokens(model: Text2SemanticModel, parity: ParitySet) -> None:
    params = SamplingParams(top_k=1, repetition_penalty=1.35, max_steps=30)
    result, logits = _run_hooked(model, parity, params, _mask_eos, use_cache=False)
    assert result.tokens.tolist() == _expected(parity, "t2s_greedy_tokens_rep1.35.npy").tolist()
    np.testing.assert_allclose(logits, _expected(parity, "t2s_greedy_logits_rep1.35.npy"), rtol=0, atol=PARITY_ATOL)


def test_fp16_model_stays_within_fp16_tolerance(parity: ParitySet) -> None:
    half = Text2SemanticModel.load(parity.checkpoint, dtype=torch.float16)
    assert half.dtype == torch.float16 and not half.training
    params = SamplingParams(top_k=1, repetition_penalty=1.0, max_steps=30)
    _, logits = _run_hooked(half, parity, params, _mask_eos)
    # All 30 rows: a greedy token differing from the official one would show up as a large
    # logit difference in the rows after it.
    np.testing.assert_allclose(logits, _expected(parity, "t2s_greedy_logits_rep1.0.npy"), rtol=0, atol=1e-2)


def test_phone_ids_beyond_the_vocabulary_are_refused(model: Text2SemanticModel, parity: ParitySet) -> None:
    request = _request(parity, SamplingParams(top_k=1, max_steps=2))
    phones = request.phones.clone()
    phones[-1] = parity.phoneme_vocab_size
    bad = T2SRequest(phones=phones, bert=request.bert, prompt=request.prompt, params=request.params)
    with pytest.raises(ValueError, match=f"phone ids must lie in \\[0, {parity.phoneme_vocab_size}\\)"):
        generate(model, [bad])
