"""The ONNX Runtime decode step with the KV cache bound in place (``onnx_step.BoundDecodeStep``
behind ``generate(step=...)``): official numerics at 1e-6, and the same tokens as the torch path
through left padding, rows leaving the batch and cache growth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.official import PARITY
from workers.gpt.model import SamplingParams, T2SConfig, T2SRequest, Text2SemanticModel, generate, random_model
from workers.gpt.model.config import MIN_STEPS_BEFORE_EOS
from workers.gpt.model.generate import _BoundDecoder
from workers.gpt.model.onnx_step import BoundStepSession, export_bound_step

ATOL = 1e-6


def _session(model: Text2SemanticModel, path: Path) -> BoundStepSession:
    return BoundStepSession(export_bound_step(model, path), threads=1)


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Text2SemanticModel, BoundStepSession]:
    torch.set_num_threads(1)
    model = Text2SemanticModel.load(PARITY / "s1_small.ckpt")
    return model, _session(model, tmp_path_factory.mktemp("onnx") / "bound.onnx")


def _decoder(model: Text2SemanticModel, session: BoundStepSession) -> tuple[_BoundDecoder, int]:
    inputs = PARITY / "inputs"
    phones = torch.from_numpy(
        np.concatenate([np.load(inputs / "phones_prompt.npy"), np.load(inputs / "phones_target.npy")])
    )
    prompt = torch.from_numpy(np.load(inputs / "prompt_semantic.npy"))
    text = model.embed_text(phones, torch.from_numpy(np.load(inputs / "bert.npy")))
    return _BoundDecoder(model, [text], [prompt], budget=64, session=session), prompt.shape[0]


@torch.inference_mode()
def test_bound_steps_reproduce_official_forced_logits(official: tuple[Text2SemanticModel, BoundStepSession]) -> None:
    model, session = official
    forced = np.load(PARITY / "inputs" / "forced_tokens.npy")
    expected = np.load(PARITY / "expected" / "t2s_forced_logits.npy")
    decoder, prompt_len = _decoder(model, session)
    decoder.first()  # the torch prefill, covered by test_t2s_parity.py
    for i in range(len(forced) - 1):
        logits = decoder.next(torch.tensor([int(forced[i])]), torch.tensor([prompt_len + i]))
        np.testing.assert_allclose(logits.numpy()[0], expected[i + 1], rtol=0, atol=ATOL)


@torch.inference_mode()
def test_bound_steps_give_official_greedy_tokens(official: tuple[Text2SemanticModel, BoundStepSession]) -> None:
    model, session = official
    tokens = np.load(PARITY / "expected" / "t2s_greedy_tokens_rep1.0.npy")
    expected = np.load(PARITY / "expected" / "t2s_greedy_logits_rep1.0.npy")
    decoder, prompt_len = _decoder(model, session)
    logits = decoder.first()
    ours = []
    for i in range(len(tokens)):
        if i > 0:
            np.testing.assert_allclose(logits.numpy()[0], expected[i], rtol=0, atol=ATOL)
        token = int(logits[0, : model.config.eos].argmax())  # the official run masked EOS
        ours.append(token)
        logits = decoder.next(torch.tensor([token]), torch.tensor([prompt_len + i]))
    assert ours == tokens.tolist()


def test_generate_with_bound_step_equals_torch_on_a_ragged_batch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = random_model(T2SConfig(embedding_dim=64, hidden_dim=64, num_heads=4, num_layers=2), seed=5)
    session = _session(model, tmp_path / "bound.onnx")
    g = torch.Generator().manual_seed(1)
    shapes = [(12, 9, 70), (5, None, 40), (20, 3, MIN_STEPS_BEFORE_EOS + 2)]  # phones, prompt, steps
    requests = [
        T2SRequest(
            phones=torch.randint(1, 732, (p,), generator=g),
            bert=torch.randn(1024, p, generator=g),
            prompt=None if t is None else torch.randint(0, 1024, (t,), generator=g),
            seed=i,
            params=SamplingParams(top_k=5, early_stop_num=-1, max_steps=steps),
        )
        for i, (p, t, steps) in enumerate(shapes)
    ]
    reference = generate(model, requests)
    bound = generate(model, requests, step=session)
    # Sampled (top_k 5), so any logit drift large enough to matter would change a token.
    assert [r.tokens.tolist() for r in bound] == [r.tokens.tolist() for r in reference]
    assert [r.stop_reason for r in bound] == [r.stop_reason for r in reference]
    # Rows left at different steps, and 70 steps outgrew the first 32 spare cache columns twice.
    assert sorted(len(r.tokens) for r in reference) == [MIN_STEPS_BEFORE_EOS + 2, 40, 70]


def test_tokens_are_reported_as_they_are_kept(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = random_model(T2SConfig(embedding_dim=64, hidden_dim=64, num_heads=4, num_layers=2), seed=6)
    g = torch.Generator().manual_seed(2)
    requests = [
        T2SRequest(
            phones=torch.randint(1, 732, (p,), generator=g),
            bert=torch.randn(1024, p, generator=g),
            prompt=torch.randint(0, 1024, (5,), generator=g),
            seed=i,
            params=SamplingParams(top_k=5, early_stop_num=-1, max_steps=steps),
        )
        for i, (p, steps) in enumerate([(7, 30), (11, 14)])
    ]
    reported: list[tuple[int, int]] = []
    results = generate(model, requests, on_token=lambda row, token: reported.append((row, token)))
    for row, result in enumerate(results):
        assert [t for r, t in reported if r == row] == result.tokens.tolist()
    # Interleaved step by step, not per request at the end.
    assert [r for r, _ in reported[:4]] == [0, 1, 0, 1]
