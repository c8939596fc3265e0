"""SoVITS generations beside v2: v2Pro and v2ProPlus (speaker-verification fusion) against the
official outputs in parity-v2pro, v1 against parity-v1, version detection on written headers,
and the full-size layouts of every generation.

Tolerances: the style tensors (ge_refenc, sv_proj, ge_fused, ge512, the 2-reference mean) at
1e-5 absolute and every waveform at 1e-6 absolute, 100x tighter than the sets' suggested 1e-4
(measured on CPU fp32: at most 3.6e-7 for the style tensors, 1.1e-7 for the waveforms).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.checkpoints import CheckpointError, read_container, write_container
from workers.sovits.model import (
    GENERATIONS,
    SoVITSConfig,
    SoVITSModel,
    detect_version,
    generation_config,
    reference_spectrogram,
    write_random_checkpoint,
)
from tests.support.official import parity_v1, parity_v2pro, shared_gpt_sovits

torch.set_num_threads(1)

STYLE_ATOL = 1e-5
WAVE_ATOL = 1e-6
PRO = ("v2Pro", "v2ProPlus")


def _t(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path))


@pytest.fixture(scope="module", params=PRO)
def pro(request: pytest.FixtureRequest) -> tuple[str, SoVITSModel]:
    generation = request.param
    return generation, SoVITSModel.load(parity_v2pro() / f"s2G_{generation}_small.pth")


@pytest.fixture(scope="module")
def pro_refs() -> dict[str, torch.Tensor]:
    root = parity_v2pro()
    return {
        "spec": _t(root / "expected/refer_spec.npy"),
        "spec2": _t(root / "expected/refer_spec_ref2.npy"),
        "sv": _t(root / "inputs/sv_emb_ref.npy"),
        "sv2": _t(root / "inputs/sv_emb_ref2.npy"),
        "codes": _t(root / "inputs/decode_codes.npy"),
        "phones": _t(root / "inputs/phones_target.npy")[None],
    }


def _pro_expected(generation: str, name: str) -> np.ndarray:
    return np.load(parity_v2pro() / "expected" / f"{generation}_{name}.npy")


# --- v2Pro / v2ProPlus parity ----------------------------------------------------------------


def test_pro_loads_its_generation(pro: tuple[str, SoVITSModel]) -> None:
    generation, model = pro
    path = parity_v2pro() / f"s2G_{generation}_small.pth"
    assert path.read_bytes()[:2] == (b"05" if generation == "v2Pro" else b"06")
    assert model.config.version == generation and model.is_pro
    assert model.config.gin_channels == 32
    assert model.config.upsample_kernel_sizes[0] == (16 if generation == "v2Pro" else 20)
    assert model.config.upsample_initial_channel == (64 if generation == "v2Pro" else 96)
    assert model.prelu.weight.shape == (32,) and model.ge_to512.weight.shape == (512, 32)


def test_pro_style_stages_match_official(pro: tuple[str, SoVITSModel], pro_refs: dict[str, torch.Tensor]) -> None:
    generation, model = pro
    spec, sv = pro_refs["spec"], pro_refs["sv"]
    with torch.inference_mode():
        ge_refenc = model.ref_enc(spec[:, :704])
        sv_proj = model.sv_projection(sv)
        style = model.style_vector([spec], [sv])
        ge512 = model.mrte_style(style)
    for name, got in (("ge_refenc", ge_refenc), ("sv_proj", sv_proj), ("ge_fused", style), ("ge512", ge512)):
        expected = _pro_expected(generation, name)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=STYLE_ATOL, err_msg=name)


def test_pro_two_references_fuse_each_then_average(
    pro: tuple[str, SoVITSModel], pro_refs: dict[str, torch.Tensor]
) -> None:
    generation, model = pro
    r = pro_refs
    own2 = model.style_vector([r["spec2"]], [r["sv2"]])
    np.testing.assert_allclose(own2.numpy(), _pro_expected(generation, "ge_fused_ref2"), rtol=0, atol=STYLE_ATOL)
    mean = model.style_vector([r["spec"], r["spec2"]], [r["sv"], r["sv2"]])
    np.testing.assert_allclose(mean.numpy(), _pro_expected(generation, "ge_mean_2refs"), rtol=0, atol=STYLE_ATOL)
    # Swapping the SV order pairs each spectrogram with the other speaker: a different style.
    swapped = model.style_vector([r["spec"], r["spec2"]], [r["sv2"], r["sv"]])
    assert (swapped - mean).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("case", "speed"), [("speed1", 1.0), ("speed1.25", 1.25), ("2refs", 1.0)]
)
def test_pro_decode_matches_official(
    pro: tuple[str, SoVITSModel], pro_refs: dict[str, torch.Tensor], case: str, speed: float
) -> None:
    generation, model = pro
    r = pro_refs
    specs, svs = ([r["spec"], r["spec2"]], [r["sv"], r["sv2"]]) if case == "2refs" else ([r["spec"]], [r["sv"]])
    # The voice's stored style is all decode needs; the official per-call path gives the same.
    style = model.style_vector(specs, svs)
    wav = model.decode(r["codes"], r["phones"], style, noise_scale=0.0, speed=speed)
    expected = _pro_expected(generation, f"decode_wav_{case}")
    assert wav.shape == expected.shape
    np.testing.assert_allclose(wav.numpy(), expected, rtol=0, atol=WAVE_ATOL)
    direct = model.decode_with_references(r["codes"], r["phones"], specs, 0.0, speed, sv_embeddings=svs)
    torch.testing.assert_close(direct, wav, rtol=0, atol=0)


def test_pro_style_needs_one_sv_embedding_per_reference(
    pro: tuple[str, SoVITSModel], pro_refs: dict[str, torch.Tensor]
) -> None:
    _, model = pro
    spec, sv = pro_refs["spec"], pro_refs["sv"]
    with pytest.raises(ValueError, match="one SV embedding per reference spectrogram \\(1\\), got none"):
        model.style_vector([spec])
    with pytest.raises(ValueError, match="\\(2\\), got 1"):
        model.style_vector([spec, spec], [sv])
    with pytest.raises(ValueError, match="\\[1, 20480\\]"):
        model.style_vector([spec], [sv[:, :100]])
    with pytest.raises(ValueError, match="style must be \\[1, 32, 1\\]"):
        model.decode(pro_refs["codes"], pro_refs["phones"], torch.zeros(1, 512, 1))


# --- v1 parity -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1_model() -> SoVITSModel:
    return SoVITSModel.load(parity_v1() / "s2G_v1_small.pth")


def test_v1_loads_with_its_phone_table_and_all_bins(v1_model: SoVITSModel) -> None:
    assert v1_model.config.version == "v1" and not v1_model.is_pro
    assert v1_model.config.n_symbols == 322 and v1_model.config.ref_bins == 1025
    assert v1_model.enc_p.text_embedding.weight.shape == (322, 192)


def test_v1_reference_encoder_reads_all_bins(v1_model: SoVITSModel) -> None:
    root = parity_v1()
    spec = reference_spectrogram(_t(root / "inputs/ref_wav_32k.npy"))
    np.testing.assert_allclose(spec.numpy(), np.load(root / "expected/refer_spec.npy"), rtol=1e-5, atol=1e-3)
    style = v1_model.style_vector([_t(root / "expected/refer_spec.npy")])
    np.testing.assert_allclose(style.numpy(), np.load(root / "expected/ge_refenc.npy"), rtol=0, atol=STYLE_ATOL)
    with pytest.raises(ValueError, match="takes no SV embeddings"):
        v1_model.style_vector([spec], [torch.zeros(1, 20480)])


@pytest.mark.parametrize("speed", ["1", "1.25"])
def test_v1_decode_matches_official(v1_model: SoVITSModel, speed: str) -> None:
    root = parity_v1()
    style = v1_model.style_vector([_t(root / "expected/refer_spec.npy")])
    codes, phones = _t(root / "inputs/decode_codes.npy"), _t(root / "inputs/phones_target.npy")[None]
    wav = v1_model.decode(codes, phones, style, noise_scale=0.0, speed=float(speed))
    expected = np.load(root / f"expected/sovits_decode_wav_speed{speed}.npy")
    assert wav.shape == expected.shape
    np.testing.assert_allclose(wav.numpy(), expected, rtol=0, atol=WAVE_ATOL)
    with pytest.raises(ValueError, match="phone ids must lie in \\[0, 322\\)"):
        v1_model.decode(codes, phones + 322, style)


# --- version detection -----------------------------------------------------------------------


def _rewritten(src: Path, out: Path, header: str | None, edit=None, config_edit=None) -> Path:
    container = read_container(src)
    weight, config = dict(container.weight), dict(container.config)
    if edit is not None:
        edit(weight)
    if config_edit is not None:
        config = config_edit(config)
    write_container(out, weight, config, container.info, header_version=header)
    return out


@pytest.mark.parametrize(
    ("header", "magic", "expected"),
    [("v2Pro", b"05", "v2Pro"), ("v2ProPlus", b"06", "v2ProPlus"), (None, b"PK", "v2Pro"), ("v2", b"01", "v2Pro")],
)
def test_pro_detection_from_written_headers(tmp_path: Path, header: str | None, magic: bytes, expected: str) -> None:
    # No header (or a v2 one) on Pro weights: the sv_emb key still marks the Pro family, and the
    # config names which one.
    path = _rewritten(parity_v2pro() / "s2G_v2Pro_small.pth", tmp_path / "pro.pth", header)
    assert path.read_bytes()[:4] == magic + b"\x03\x04"
    if header == "v2ProPlus":
        # The header wins over the config, as officially; then the v2Pro decoder does not fit.
        assert detect_version(read_container(path)) == "v2ProPlus"
        return
    assert detect_version(read_container(path)) == expected
    assert SoVITSModel.load(path).config.version == expected


def test_headerless_pro_without_a_config_version_is_told_by_its_first_upsampler(tmp_path: Path) -> None:
    def unlabelled(config: dict) -> dict:
        model = {k: v for k, v in config["model"].items() if k != "version"}
        return {**{k: v for k, v in config.items() if k != "version"}, "model": model}

    for generation in PRO:
        path = _rewritten(
            parity_v2pro() / f"s2G_{generation}_small.pth", tmp_path / f"{generation}.pth", None, config_edit=unlabelled
        )
        assert detect_version(read_container(path)) == generation


def test_v1_detection_by_phone_rows_overrules_headers(tmp_path: Path) -> None:
    src = parity_v1() / "s2G_v1_small.pth"
    assert src.read_bytes()[:2] == b"PK"
    for header in (None, "v1", "v2"):
        path = _rewritten(src, tmp_path / "v1.pth", header)
        assert detect_version(read_container(path)) == "v1"


def test_odd_phone_row_count_is_an_error(tmp_path: Path) -> None:
    path = _rewritten(
        parity_v1() / "s2G_v1_small.pth",
        tmp_path / "odd.pth",
        None,
        edit=lambda w: w.update({"enc_p.text_embedding.weight": torch.zeros(500, 192)}),
    )
    with pytest.raises(CheckpointError, match="500 rows; v2 has 732, v1 322"):
        SoVITSModel.load(path)


# --- random checkpoints and the official full-size layouts -----------------------------------


def _official_keys(generation: str) -> dict[str, tuple[int, ...]]:
    with open(shared_gpt_sovits() / f"sovits_{generation}_keys.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["key"]: tuple(int(n) for n in r["shape"].split("x")) for r in rows if r["in_official_ckpt"] == "1"}


@pytest.mark.parametrize("generation", GENERATIONS)
def test_full_size_layout_matches_official_keys(generation: str) -> None:
    config = SoVITSConfig.from_dict(generation_config(generation, full_size=True))
    assert config.version == generation
    with torch.device("meta"):
        shapes = SoVITSModel(config).official_key_shapes()
    assert shapes == _official_keys(generation)
    assert len(shapes) == (678 if generation in PRO else 673)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_small_random_checkpoints_round_trip(tmp_path: Path, generation: str) -> None:
    path = tmp_path / f"{generation}.pth"
    write_random_checkpoint(path, seed=4, generation=generation)
    magic = {"v2Pro": b"05", "v2ProPlus": b"06"}.get(generation, b"PK")
    assert path.read_bytes()[:2] == magic
    model = SoVITSModel.load(path)
    assert model.config.version == generation
    spec = torch.rand(1, 1025, 40, generator=torch.Generator().manual_seed(0))
    sv = [torch.randn(1, 20480, generator=torch.Generator().manual_seed(1))] if model.is_pro else None
    style = model.style_vector([spec], sv)
    wav = model.decode(torch.tensor([[[1, 2, 3]]]), torch.tensor([[5, 9, 300]]), style, noise_scale=0.5)
    assert wav.shape == (1, 1, 3 * 1280) and torch.isfinite(wav).all()


def test_full_size_random_v2proplus_loads_and_renders(tmp_path: Path) -> None:
    path = tmp_path / "random_v2ProPlus.pth"
    write_random_checkpoint(path, seed=0, full_size=True, generation="v2ProPlus")
    assert path.read_bytes()[:2] == b"06"
    weight = read_container(path).weight
    assert {k: tuple(v.shape) for k, v in weight.items()} == _official_keys("v2ProPlus")
    assert sum(v.numel() for k, v in weight.items() if not k.startswith("quantizer.")) == 84_698_368
    del weight
    model = SoVITSModel.load(path)
    assert model.config.version == "v2ProPlus" and model.config.gin_channels == 1024
    gen = torch.Generator().manual_seed(0)
    spec = torch.rand(1, 1025, 100, generator=gen) * 5
    sv = torch.randn(1, 20480, generator=gen) * 0.24
    style = model.style_vector([spec], [sv])
    assert style.shape == (1, 1024, 1)
    codes = torch.randint(0, 1024, (1, 1, 25), generator=gen)  # 1 s of audio
    wav = model.decode(codes, torch.randint(1, 732, (1, 12), generator=gen), style, noise_scale=0.5)
    assert wav.shape == (1, 1, 32000)
    assert torch.isfinite(wav).all() and wav.std() > 0
