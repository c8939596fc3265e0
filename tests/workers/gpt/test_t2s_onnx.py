"""The exported T2S decode step (KV cache in, KV cache out) run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers.gpt.model import T2SConfig, Text2SemanticModel, random_model
from workers.gpt.model.generate import _CachedDecoder
from workers.gpt.model.onnx_step import export_decode_step

import onnxruntime as ort
from tests.support.official import PARITY



def _session(model: Text2SemanticModel, path: Path, dynamo: bool = False):  # type: ignore[no-untyped-def]
    export_decode_step(model, path, dynamo=dynamo)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _prefill(  # type: ignore[no-untyped-def]
    model: Text2SemanticModel, phones, berts, prompts
) -> tuple[_CachedDecoder, torch.Tensor]:
    texts = [model.embed_text(p, b) for p, b in zip(phones, berts)]
    decoder = _CachedDecoder(model, texts, prompts, budget=64)
    return decoder, decoder.first()


def _run(sess, tokens, positions, past_k, past_v, key_mask):  # type: ignore[no-untyped-def]
    return sess.run(
        None,
        {
            "tokens": np.asarray(tokens, dtype=np.int64),
            "positions": np.asarray(positions, dtype=np.int64),
            "past_k": past_k,
            "past_v": past_v,
            "key_mask": key_mask,
        },
    )


@torch.inference_mode()
def test_onnx_steps_reproduce_official_forced_logits(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = Text2SemanticModel.load(PARITY / "s1_small.ckpt")
    sess = _session(model, tmp_path / "step.onnx")
    inputs = PARITY / "inputs"
    phones = torch.from_numpy(
        np.concatenate([np.load(inputs / "phones_prompt.npy"), np.load(inputs / "phones_target.npy")])
    )
    prompt = torch.from_numpy(np.load(inputs / "prompt_semantic.npy"))
    forced = np.load(inputs / "forced_tokens.npy")
    expected = np.load(PARITY / "expected" / "t2s_forced_logits.npy")

    decoder, logits = _prefill(model, [phones], [torch.from_numpy(np.load(inputs / "bert.npy"))], [prompt])
    np.testing.assert_allclose(logits.numpy()[0], expected[0], rtol=0, atol=1e-4)
    length = decoder.cache.length
    k = decoder.cache.k[:, :, :, :length].numpy().copy()
    v = decoder.cache.v[:, :, :, :length].numpy().copy()
    for i in range(len(forced) - 1):
        mask = np.ones((1, k.shape[3] + 1), dtype=bool)
        logits_np, k, v = _run(sess, [forced[i]], [len(prompt) + i], k, v, mask)
        np.testing.assert_allclose(logits_np[0], expected[i + 1], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "dynamo",
    [
        False,
        True,
    ],
)
def test_onnx_step_matches_torch_on_a_left_padded_batch(tmp_path: Path, dynamo: bool) -> None:
    torch.set_num_threads(1)
    model = random_model(T2SConfig(embedding_dim=64, hidden_dim=64, num_heads=4, num_layers=2), seed=4)
    sess = _session(model, tmp_path / "step.onnx", dynamo=dynamo)
    _check_padded_batch(model, sess)


@torch.inference_mode()
def _check_padded_batch(model: Text2SemanticModel, sess) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    phones = [torch.randint(1, 732, (n,), generator=g) for n in (12, 5)]
    berts = [torch.randn(1024, p.shape[0], generator=g) for p in phones]
    prompts = [torch.randint(0, 1024, (9,), generator=g), torch.zeros(0, dtype=torch.long)]  # 2nd: ref-free
    decoder, logits = _prefill(model, phones, berts, prompts)
    offsets = decoder.offsets.numpy()
    assert offsets.tolist() == [0, 16]  # 21 vs 5 positions: the short one is left-padded
    length = decoder.cache.length
    k = decoder.cache.k[:, :, :, :length].numpy().copy()
    v = decoder.cache.v[:, :, :, :length].numpy().copy()
    prompt_lens = torch.tensor([9, 0])
    for step in range(8):
        tokens = logits.argmax(-1).clamp(max=1023)
        positions = prompt_lens + step
        mask = np.arange(k.shape[3] + 1)[None, :] >= offsets[:, None]
        onnx_logits, k, v = _run(sess, tokens.numpy(), positions.numpy(), k, v, mask)
        logits = decoder.next(tokens, positions)
        np.testing.assert_allclose(onnx_logits, logits.numpy(), rtol=0, atol=1e-4)
