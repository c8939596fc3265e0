"""T2S checkpoints: config parsing, strict loading, and random files in the official layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.checkpoints import CheckpointError, read_container
from workers.gpt.model import (
    SamplingParams,
    T2SConfig,
    T2SRequest,
    Text2SemanticModel,
    generate,
    write_random_checkpoint,
)
from tests.support.official import OFFICIAL

SHARED = OFFICIAL


def _small_config(**model: Any) -> dict[str, Any]:
    cfg = {
        "data": {"max_sec": 54},
        "model": {
            "vocab_size": 1025, "phoneme_vocab_size": 732, "embedding_dim": 32, "hidden_dim": 32,
            "head": 2, "linear_units": 999, "n_layer": 2, "dropout": 0, "EOS": 1024,
        },
    }
    cfg["model"].update(model)
    return cfg


def _edit(path: Path, edit) -> Path:
    raw = torch.load(path, weights_only=True)
    edit(raw)
    out = path.with_name("edited.ckpt")
    torch.save(raw, out)
    return out


@pytest.fixture()
def small_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "small.ckpt"
    write_random_checkpoint(path, _small_config(), seed=1)
    return path


# --- config ---------------------------------------------------------------------------------------


def test_config_from_official_v2_dict() -> None:
    official = json.loads((SHARED / "t2s_v2_config.json").read_text())["config"]
    cfg = T2SConfig.from_dict(official)
    assert cfg == T2SConfig()
    shape = (cfg.num_layers, cfg.hidden_dim, cfg.num_heads, cfg.phoneme_vocab_size, cfg.vocab_size)
    assert shape == (24, 512, 16, 732, 1025)
    assert cfg.ffn_dim == 2048 and cfg.early_stop_num == 2700


def test_linear_units_is_ignored() -> None:
    cfg = T2SConfig.from_dict(_small_config(linear_units=999))
    assert cfg.ffn_dim == 128
    assert Text2SemanticModel(cfg).h.layers[0].linear1.weight.shape == (128, 32)


# --- loading --------------------------------------------------------------------------------------


def test_random_checkpoint_round_trips(small_ckpt: Path) -> None:
    container = read_container(small_ckpt)
    assert container.info == "GPT-e1" and container.header_version is None
    assert small_ckpt.read_bytes()[:2] == b"PK"
    assert all(k.startswith("model.") and v.dtype == torch.float16 for k, v in container.weight.items())
    model = Text2SemanticModel.load(small_ckpt)
    assert not model.training and model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    state = model.state_dict()
    for key, value in container.weight.items():
        assert torch.equal(state[key.removeprefix("model.")], value.float())


def test_official_small_checkpoint_keys_equal_ours() -> None:
    official = read_container(SHARED / "parity-small" / "s1_small.ckpt")
    model = Text2SemanticModel.load(SHARED / "parity-small" / "s1_small.ckpt")
    assert {"model." + k for k in model.state_dict()} == set(official.weight)


def test_missing_key_is_named(small_ckpt: Path) -> None:
    bad = _edit(small_ckpt, lambda raw: raw["weight"].pop("model.h.layers.1.norm2.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys: h\.layers\.1\.norm2\.bias"):
        Text2SemanticModel.load(bad)


def test_unexpected_key_is_named(small_ckpt: Path) -> None:
    def add(raw: dict) -> None:
        raw["weight"]["model.ar_predict_layer.bias"] = torch.zeros(1025, dtype=torch.float16)

    with pytest.raises(CheckpointError, match=r"unexpected keys: ar_predict_layer\.bias"):
        Text2SemanticModel.load(_edit(small_ckpt, add))


def test_wrong_shape_is_named(small_ckpt: Path) -> None:
    def shrink(raw: dict) -> None:
        raw["weight"]["model.h.layers.0.self_attn.in_proj_weight"] = torch.zeros(90, 32, dtype=torch.float16)

    with pytest.raises(CheckpointError, match=r"in_proj_weight \(90, 32\) != \(96, 32\)"):
        Text2SemanticModel.load(_edit(small_ckpt, shrink))


def test_config_that_disagrees_with_weights_is_refused(small_ckpt: Path) -> None:
    # v1-sized config over v2-sized weights.
    bad = _edit(small_ckpt, lambda raw: raw["config"]["model"].update(phoneme_vocab_size=512))
    with pytest.raises(CheckpointError, match="ar_text_embedding.word_embeddings.weight"):
        Text2SemanticModel.load(bad)


def test_missing_prefix_and_bad_config_are_refused(small_ckpt: Path) -> None:
    def strip(raw: dict) -> None:
        raw["weight"] = {k.removeprefix("model."): v for k, v in raw["weight"].items()}

    with pytest.raises(CheckpointError, match="prefix"):
        Text2SemanticModel.load(_edit(small_ckpt, strip))
    with pytest.raises(CheckpointError, match="config"):
        Text2SemanticModel.load(_edit(small_ckpt, lambda raw: raw["config"]["model"].pop("head")))


def test_v1_phoneme_vocab_of_512_loads_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "v1.ckpt"
    write_random_checkpoint(path, _small_config(phoneme_vocab_size=512), seed=2)
    model = Text2SemanticModel.load(path)
    assert model.ar_text_embedding.word_embeddings.weight.shape == (512, 32)
    req = T2SRequest(
        torch.tensor([3, 511, 7]), torch.zeros(1024, 3), torch.tensor([1, 2]), params=SamplingParams(max_steps=2)
    )
    assert len(generate(model, [req])[0].tokens) == 2


def test_half_precision_load(small_ckpt: Path) -> None:
    model = Text2SemanticModel.load(small_ckpt, dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# --- full size ------------------------------------------------------------------------------------


def test_full_size_random_checkpoint_matches_official_key_table(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rows = [line.split("\t") for line in (SHARED / "t2s_v2_keys.tsv").read_text().splitlines()[1:] if line]
    table = {key: tuple(int(n) for n in shape.split("x")) for key, shape, *_ in rows}
    assert len(table) == 295

    official = json.loads((SHARED / "t2s_v2_config.json").read_text())["config"]
    path = tmp_path / "full.ckpt"
    write_random_checkpoint(path, official, seed=0)
    container = read_container(path)
    assert {k: tuple(v.shape) for k, v in container.weight.items()} == table
    assert sum(v.numel() for v in container.weight.values()) == 77_606_402
    assert container.config == official

    model = Text2SemanticModel.load(path)
    assert sum(p.numel() for p in model.parameters()) == 77_606_402
    g = torch.Generator().manual_seed(0)
    req = T2SRequest(
        torch.randint(1, 732, (16,), generator=g),
        torch.randn(1024, 16, generator=g),
        torch.randint(0, 1024, (20,), generator=g),
        params=SamplingParams(max_steps=3),
    )
    result = generate(model, [req])[0]
    assert result.stop_reason == "max_steps" and len(result.tokens) == 3


def test_v1_checkpoint_config_and_generations() -> None:
    from tests.support.official import parity_v1

    v1 = Text2SemanticModel.load(parity_v1() / "s1_v1_small.ckpt")
    assert v1.config.phoneme_vocab_size == 512 and v1.config.phone_table == "v1"
    assert v1.ar_text_embedding.word_embeddings.weight.shape == (512, 64)
    assert T2SConfig().phone_table == "v2"
    assert T2SConfig.for_generation("v1").phoneme_vocab_size == 512
    for generation in ("v2", "v2Pro", "v2ProPlus"):
        assert T2SConfig.for_generation(generation) == T2SConfig()
    with pytest.raises(ValueError, match="v3"):
        T2SConfig.for_generation("v3")
