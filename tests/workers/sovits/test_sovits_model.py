"""SoVITS v2 model: parity with the official outputs (parity-small), strict loading, version
detection, and the full-size layout."""

from __future__ import annotations

import csv
import io
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workers.checkpoints import CheckpointError, UnsupportedModelVersion, read_container, write_container
from workers.sovits.model import (
    SoVITSConfig,
    SoVITSModel,
    reference_spectrogram,
    v2_config,
    write_random_checkpoint,
)
from workers.sovits.model import weight_norm
from workers.sovits.model.checkpoint import random_state_dict
from tests.support.official import OFFICIAL, PARITY

torch.set_num_threads(1)

SMALL = PARITY / "s2G_small.pth"


def _npy(name: str) -> np.ndarray:
    return np.load(PARITY / name)


@pytest.fixture(scope="module")
def model() -> SoVITSModel:
    return SoVITSModel.load(SMALL)


@pytest.fixture(scope="module")
def refer_spec() -> torch.Tensor:
    return torch.from_numpy(_npy("expected/refer_spec.npy"))


@pytest.fixture(scope="module")
def style(model: SoVITSModel, refer_spec: torch.Tensor) -> torch.Tensor:
    return model.style_vector([refer_spec])


@pytest.fixture(scope="module")
def decode_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(_npy("inputs/decode_codes.npy")), torch.from_numpy(_npy("inputs/phones_target.npy"))[None]


# --- parity with the official implementation -------------------------------------------------


def test_reference_spectrogram_matches_official() -> None:
    spec = reference_spectrogram(torch.from_numpy(_npy("inputs/ref_wav_32k.npy")))
    expected = _npy("expected/refer_spec.npy")
    assert spec.shape == (1, 1025, 160) and spec.dtype == torch.float32
    np.testing.assert_allclose(spec.numpy(), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("gain", "ratio"),
    [
        (2.5, 2.5 / 2),  # peak 0.9 * 2.5 = 2.25: divided by min(2, peak) = 2
        (1.5, 1.5 / 1.35),  # peak 1.35: divided by the peak itself
        (1.0, 1.0),  # peak 0.9 <= 1: untouched
    ],
)
def test_reference_spectrogram_scales_loud_input_down(gain: float, ratio: float) -> None:
    wav = torch.from_numpy(_npy("inputs/ref_wav_32k.npy"))
    assert wav.abs().max().item() == pytest.approx(0.9, abs=1e-6)
    loud = reference_spectrogram(wav * gain)
    base = reference_spectrogram(wav)
    np.testing.assert_allclose(loud.numpy(), ratio * base.numpy(), rtol=1e-4, atol=1e-3)


def test_extract_latent_codes_exact(model: SoVITSModel) -> None:
    codes = model.extract_latent(torch.from_numpy(_npy("inputs/ssl_content.npy")))
    assert codes.shape == (1, 1, 60) and codes.dtype == torch.long
    np.testing.assert_array_equal(codes.numpy(), _npy("expected/extract_latent_codes.npy"))


@pytest.mark.parametrize(
    ("speed", "expected_name"),
    [(1.0, "sovits_decode_wav_speed1.npy"), (1.25, "sovits_decode_wav_speed1.25.npy")],
)
def test_decode_matches_official(
    model: SoVITSModel,
    style: torch.Tensor,
    decode_inputs: tuple[torch.Tensor, torch.Tensor],
    speed: float,
    expected_name: str,
) -> None:
    codes, phones = decode_inputs
    wav = model.decode(codes, phones, style, noise_scale=0.0, speed=speed)
    expected = _npy(f"expected/{expected_name}")
    assert wav.shape == expected.shape
    np.testing.assert_allclose(wav.numpy(), expected, rtol=0, atol=1e-6)  # README: measured ~1.3e-7


def test_decode_with_references_averages_styles(
    model: SoVITSModel, refer_spec: torch.Tensor, decode_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    codes, phones = decode_inputs
    other = refer_spec[:, :, :90].flip(-1).contiguous()
    s1, s2 = model.style_vector([refer_spec]), model.style_vector([other])
    both = model.style_vector([refer_spec, other])
    assert both.shape == (1, 512, 1)
    torch.testing.assert_close(both, (s1 + s2) / 2)
    wav = model.decode_with_references(codes, phones, [refer_spec], noise_scale=0.0)
    np.testing.assert_allclose(wav.numpy(), _npy("expected/sovits_decode_wav_speed1.npy"), atol=1e-6, rtol=0)


def test_noise_follows_generator(
    model: SoVITSModel, style: torch.Tensor, decode_inputs: tuple[torch.Tensor, torch.Tensor]
) -> None:
    codes, phones = decode_inputs
    a = model.decode(codes, phones, style, generator=torch.Generator().manual_seed(1))
    b = model.decode(codes, phones, style, generator=torch.Generator().manual_seed(1))
    c = model.decode(codes, phones, style, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4


def test_decode_rejects_bad_shapes(model: SoVITSModel, style: torch.Tensor) -> None:
    codes, phones = torch.zeros(1, 1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="codes"):
        model.decode(codes[0], phones, style)
    with pytest.raises(ValueError, match="phone ids"):
        model.decode(codes, phones + 732, style)
    with pytest.raises(ValueError, match="style"):
        model.decode(codes, phones, style[:, :100])


def test_fp16_load_runs(decode_inputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    half = SoVITSModel.load(SMALL, dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert not half.training and not any(p.requires_grad for p in half.parameters())
    codes, phones = decode_inputs
    spec = torch.from_numpy(_npy("expected/refer_spec.npy"))
    wav = half.decode(codes[:, :, :10], phones, half.style_vector([spec]), noise_scale=0.0)
    expected = _npy("expected/sovits_decode_wav_speed1.npy")
    assert wav.dtype == torch.float16 and wav.shape == (1, 1, 12800)
    # Decoding a prefix is not the same computation as the full run (attention sees fewer
    # frames), so only a coarse check: fp16 output is finite and of the same loudness.
    assert torch.isfinite(wav).all()
    assert 0.3 < wav.float().std().item() / float(expected.std()) < 3


# --- weight norm -----------------------------------------------------------------------------


def test_fold_matches_torch_weight_norm() -> None:
    v = torch.randn(8, 4, 16)  # a ConvTranspose1d weight: dim 0 is its input channel
    g = torch.rand(8, 1, 1) + 0.5
    torch.testing.assert_close(weight_norm.fold(g, v), torch._weight_norm(v, g, 0))
    g2, v2 = weight_norm.unfold(v)
    torch.testing.assert_close(weight_norm.fold(g2, v2), v)


# --- strict loading --------------------------------------------------------------------------


def _rewrite(tmp_path: Path, edit: Any, header: str | None = None, name: str = "edited.pth") -> Path:
    container = read_container(SMALL)
    weight = dict(container.weight)
    edit(weight)
    out = tmp_path / name
    write_container(out, weight, container.config, container.info, header_version=header)
    return out


def test_missing_key_is_an_error(tmp_path: Path) -> None:
    path = _rewrite(tmp_path, lambda w: w.pop("flow.flows.2.enc.cond_layer.weight_g"))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): flow.flows.2.enc.cond_layer.weight_g"):
        SoVITSModel.load(path)


def test_unexpected_key_is_an_error(tmp_path: Path) -> None:
    path = _rewrite(tmp_path, lambda w: w.update({"dec.conv_post.bias": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): dec.conv_post.bias"):
        SoVITSModel.load(path)


def test_misshaped_key_is_an_error(tmp_path: Path) -> None:
    path = _rewrite(tmp_path, lambda w: w.update({"ref_enc.fc.fc.bias": torch.zeros(256)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped key\(s\): ref_enc.fc.fc.bias \(256,\) != \(512,\)"):
        SoVITSModel.load(path)


def test_plain_weight_instead_of_weight_norm_pair_is_an_error(tmp_path: Path) -> None:
    def edit(w: dict[str, torch.Tensor]) -> None:
        g, v = w.pop("dec.ups.0.weight_g"), w.pop("dec.ups.0.weight_v")
        w["dec.ups.0.weight"] = weight_norm.fold(g.float(), v.float())

    with pytest.raises(CheckpointError, match="dec.ups.0.weight_g"):
        SoVITSModel.load(_rewrite(tmp_path, edit))


def test_enc_q_keys_are_dropped(tmp_path: Path, model: SoVITSModel) -> None:
    path = _rewrite(tmp_path, lambda w: w.update({"enc_q.pre.weight": torch.zeros(3, 2, 1)}))
    loaded = SoVITSModel.load(path)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_unreadable_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        SoVITSModel.load(bad)


# --- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["v3", "v3-lora", "v4-lora"])
def test_v3_v4_headers_are_unsupported(tmp_path: Path, header: str) -> None:
    path = _rewrite(tmp_path, lambda w: None, header=header)
    assert path.read_bytes()[:2] != b"PK"
    with pytest.raises(UnsupportedModelVersion, match=f"{header} model.*v1, v2, v2Pro and v2ProPlus"):
        SoVITSModel.load(path)


def test_v3_keys_without_header_are_unsupported(tmp_path: Path) -> None:
    path = _rewrite(tmp_path, lambda w: w.update({"cfm.proj.weight": torch.zeros(2, 2)}))
    with pytest.raises(UnsupportedModelVersion, match="v3/v4 model.*v1, v2, v2Pro and v2ProPlus"):
        SoVITSModel.load(path)


@pytest.mark.parametrize("header", ["v2Pro", "v2ProPlus"])
def test_pro_header_on_v2_weights_names_the_missing_sv_modules(tmp_path: Path, header: str) -> None:
    # The header decides the generation (as officially); the official strict=False load would
    # then run without the SV fusion, ours names what is missing.
    path = _rewrite(tmp_path, lambda w: None, header=header)
    with pytest.raises(CheckpointError, match=r"missing key\(s\): ge_to512.bias"):
        SoVITSModel.load(path)


def test_v2_header_loads(tmp_path: Path, model: SoVITSModel) -> None:
    path = _rewrite(tmp_path, lambda w: None, header="v2")
    assert path.read_bytes()[:2] == b"01"
    loaded = SoVITSModel.load(path)
    torch.testing.assert_close(loaded.dec.conv_post.weight, model.dec.conv_post.weight)


def test_v1_phone_table_without_v1_ref_encoder_is_an_error(tmp_path: Path) -> None:
    # 322 rows make it v1, and v1's reference encoder reads all 1025 bins: a v2 one is refused.
    path = _rewrite(tmp_path, lambda w: w.update({"enc_p.text_embedding.weight": torch.zeros(322, 192)}))
    with pytest.raises(CheckpointError, match=r"ref_enc.spectral.0.fc.weight \(128, 704\) != \(128, 1025\)"):
        SoVITSModel.load(path)


def test_pickled_hparams_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """s2_train.py saves its config as a pickled ``utils.HParams`` object, not a dict."""

    class HParams:  # the shape of the official utils.HParams
        def __init__(self, **kwargs: Any) -> None:
            for k, v in kwargs.items():
                setattr(self, k, HParams(**v) if isinstance(v, dict) else v)

    utils = types.ModuleType("utils")
    HParams.__module__, HParams.__qualname__ = "utils", "HParams"
    utils.HParams = HParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "utils", utils)
    container = read_container(SMALL)
    buffer = io.BytesIO()
    torch.save({"weight": container.weight, "config": HParams(**container.config), "info": "x"}, buffer)
    raw = buffer.getvalue()
    assert b"HParams" in raw
    path = tmp_path / "hparams.pth"
    path.write_bytes(raw)
    monkeypatch.delitem(sys.modules, "utils")
    loaded = SoVITSModel.load(path)
    assert loaded.config.inter_channels == 32 and loaded.config.filter_channels == 64


# --- config ----------------------------------------------------------------------------------


def test_config_from_dict_reads_data_and_model() -> None:
    config = SoVITSConfig.from_dict(read_container(SMALL).config)
    assert config.inter_channels == 32 and config.upsample_initial_channel == 64
    assert config.resblock_dilation_sizes == ((1, 3, 5),) * 3
    assert config.spec_channels == 1025 and config.ref_bins == 704 and config.samples_per_code == 1280
    assert SoVITSConfig.from_dict(v2_config()) == SoVITSConfig()


def test_config_rejects_impossible_sizes() -> None:
    config = v2_config()
    config["model"]["gin_channels"] = 256
    with pytest.raises(ValueError, match="gin_channels"):
        SoVITSConfig.from_dict(config)


# --- random checkpoints and the full-size layout ---------------------------------------------


def _official_rows() -> dict[str, tuple[int, ...]]:
    with open(OFFICIAL / "sovits_v2_keys.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {
        r["key"]: tuple(int(n) for n in r["shape"].split("x"))
        for r in rows
        if r["in_official_ckpt"] == "1"
    }


def test_small_random_checkpoint_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    write_random_checkpoint(path, seed=3)
    container = read_container(path)
    assert all(v.dtype == torch.float16 for v in container.weight.values())
    assert not any("enc_q" in k for k in container.weight)
    loaded = SoVITSModel.load(path)
    assert loaded.config == SoVITSConfig.from_dict(v2_config(full_size=False))
    state = random_state_dict(loaded.config, seed=3)
    g, v = state["flow.flows.4.enc.in_layers.1.weight_g"], state["flow.flows.4.enc.in_layers.1.weight_v"]
    expected = weight_norm.fold(g.half().float(), v.half().float())
    torch.testing.assert_close(loaded.flow.flows[4].enc.in_layers[1].weight, expected)


@pytest.fixture(scope="module")
def full_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("full") / "random_v2.pth"
    write_random_checkpoint(path, seed=0, full_size=True)
    return path


def test_full_size_layout_matches_official_keys(full_path: Path) -> None:
    weight = read_container(full_path).weight
    official = _official_rows()
    assert len(official) == 673
    assert {k: tuple(v.shape) for k, v in weight.items()} == official
    params = sum(v.numel() for k, v in weight.items() if not k.startswith("quantizer."))
    assert params == 40_815_744


def test_full_size_loads_and_decodes(full_path: Path) -> None:
    model = SoVITSModel.load(full_path)
    gains = sum(s[0] for k, s in _official_rows().items() if k.endswith(".weight_g"))
    # Folding weight norm drops one gain per output slice from the parameter count.
    assert sum(p.numel() for p in model.parameters()) == 40_815_744 - gains
    style = torch.randn(1, 512, 1, generator=torch.Generator().manual_seed(0))
    codes = torch.randint(0, 1024, (1, 1, 4), generator=torch.Generator().manual_seed(0))
    wav = model.decode(codes, torch.tensor([[5, 100, 731]]), style, noise_scale=0.5)
    assert wav.shape == (1, 1, 4 * 1280)
    assert torch.isfinite(wav).all() and wav.std() > 0
