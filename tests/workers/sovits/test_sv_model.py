"""Speaker-verification model (ERes2NetV2) and its front end: parity with the official outputs
(parity-v2pro: resampler, fbank, stage probes, embeddings), strict loading, and the full-size
layout against the official key table."""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from workers.checkpoints import CheckpointError, read_state_dict
from workers.sovits.model.fbank import kaldi_fbank, mel_filters, resample_32k_to_16k
from workers.sovits.model.sv import (
    SMALL_SV_CONFIG,
    ERes2NetV2,
    SpeakerVerifier,
    SVConfig,
    random_sv_state_dict,
    write_random_sv_checkpoint,
)
from tests.support.official import PARITY, parity_v2pro, shared_gpt_sovits

torch.set_num_threads(1)

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "layer3_ds", "fuse34")
REFS = (("ref_wav_32k", "sv_ref_wav_16k", "sv_small_emb"), ("ref2_wav_32k", "sv_ref2_wav_16k", "sv_small_emb_ref2"))


def _npy(name: str) -> np.ndarray:
    return np.load(parity_v2pro() / name)


def _max_err(actual: torch.Tensor, expected: np.ndarray) -> float:
    assert tuple(actual.shape) == expected.shape
    return float(np.abs(actual.detach().double().numpy() - expected.astype(np.float64)).max())


@pytest.fixture(scope="module")
def small_ckpt() -> Path:
    return parity_v2pro() / "sv_small.ckpt"


@pytest.fixture(scope="module")
def verifier(small_ckpt: Path) -> SpeakerVerifier:
    return SpeakerVerifier.load(small_ckpt)


@pytest.fixture(scope="module")
def stages(verifier: SpeakerVerifier) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return verifier.model.stages(torch.from_numpy(_npy("expected/sv_fbank.npy")))


# --- front end -------------------------------------------------------------------------------


@pytest.mark.parametrize(("wav", "expected", "_emb"), REFS)
def test_resample_matches_torchaudio(wav: str, expected: str, _emb: str) -> None:
    out = resample_32k_to_16k(torch.from_numpy(_npy(f"inputs/{wav}.npy"))[None])
    assert _max_err(out, _npy(f"expected/{expected}.npy")) <= 1e-6


@pytest.mark.parametrize("length", [1, 799, 800, 12345])
def test_resample_length_is_ceil_half(length: int) -> None:
    assert resample_32k_to_16k(torch.zeros(2, length)).shape == (2, math.ceil(length / 2))


def test_resample_passes_low_tones_and_stops_high_ones() -> None:
    t = torch.arange(32000, dtype=torch.float64) / 32000
    low = resample_32k_to_16k(torch.sin(2 * math.pi * 1000 * t))
    high = resample_32k_to_16k(torch.sin(2 * math.pi * 12000 * t))  # above the new Nyquist
    inner = slice(100, -100)
    assert abs(float(low[inner].abs().max()) - 1.0) < 0.01
    assert float(high[inner].abs().max()) < 5e-3  # a 28-tap filter: about -55 dB here


def test_fbank_matches_official() -> None:
    wav16k = torch.from_numpy(_npy("expected/sv_ref_wav_16k.npy"))[0]
    assert _max_err(kaldi_fbank(wav16k)[None], _npy("expected/sv_fbank.npy")) <= 1e-3


def test_front_end_from_32k_matches_official(verifier: SpeakerVerifier) -> None:
    feats = verifier.features(_npy("inputs/ref_wav_32k.npy"))
    assert _max_err(feats, _npy("expected/sv_fbank.npy")) <= 1e-3


def test_fbank_frame_count_and_short_input() -> None:
    assert kaldi_fbank(torch.zeros(400)).shape == (1, 80)
    assert kaldi_fbank(torch.zeros(400 + 160 * 7 + 159)).shape == (8, 80)
    with pytest.raises(ValueError, match="too short"):
        kaldi_fbank(torch.zeros(399))


def test_mel_filters_are_kaldi_triangles() -> None:
    banks = mel_filters()
    assert banks.shape == (80, 257)
    assert float(banks[:, -1].abs().max()) == 0.0  # Nyquist bin gets no weight
    assert float(banks[:, 0].abs().max()) == 0.0  # 0 Hz is below the 20 Hz low edge
    assert float(banks.max()) <= 1.0 and float(banks.min()) == 0.0


# --- model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_stage_probes_match_official(stages: dict[str, torch.Tensor], stage: str) -> None:
    assert _max_err(stages[stage].mean(-1), _npy(f"expected/sv_small_{stage}_tmean.npy")) <= 1e-4


def test_fuse34_output_matches_official(stages: dict[str, torch.Tensor]) -> None:
    assert _max_err(stages["fuse34"], _npy("expected/sv_small_fuse34.npy")) <= 1e-4


@pytest.mark.parametrize(("wav", "_wav16k", "expected"), REFS)
def test_embedding_matches_official(verifier: SpeakerVerifier, wav: str, _wav16k: str, expected: str) -> None:
    emb = verifier.embed(_npy(f"inputs/{wav}.npy"))
    assert emb.shape == (1, 2560) and emb.dtype == torch.float32
    assert _max_err(emb, _npy(f"expected/{expected}.npy")) <= 1e-4


def test_embed_takes_tensor_or_array_mono_or_batch_of_one(verifier: SpeakerVerifier) -> None:
    wav = _npy("inputs/ref2_wav_32k.npy")
    expected = verifier.embed(wav)
    torch.testing.assert_close(verifier.embed(torch.from_numpy(wav)), expected, rtol=0, atol=0)
    torch.testing.assert_close(verifier.embed(torch.from_numpy(wav)[None].double()), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="mono"):
        verifier.embed(np.stack([wav, wav]))


def test_loud_input_is_divided_by_min_two_peak(verifier: SpeakerVerifier) -> None:
    wav = torch.from_numpy(_npy("inputs/ref_wav_32k.npy"))  # peak 0.9

    def direct(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return verifier.model(kaldi_fbank(resample_32k_to_16k(x))[None])

    # peak 2.7 -> divided by 2 (not by its peak): the model sees 1.5 * wav
    torch.testing.assert_close(verifier.embed(wav * 3), direct(wav * 1.5), rtol=0, atol=1e-5)
    # peak 1.08 -> divided by it: the model sees wav / 0.9
    torch.testing.assert_close(verifier.embed(wav * 1.2), direct(wav * 1.2 / (0.9 * 1.2)), rtol=0, atol=1e-5)
    # quiet input is left alone
    torch.testing.assert_close(verifier.embed(wav * 0.5), direct(wav * 0.5), rtol=0, atol=0)


def test_dtype_argument_casts_the_model(small_ckpt: Path) -> None:
    wide = SpeakerVerifier.load(small_ckpt, dtype=torch.float64)
    emb = wide.embed(_npy("inputs/ref_wav_32k.npy"))
    assert wide.dtype == emb.dtype == torch.float64
    assert _max_err(emb, _npy("expected/sv_small_emb.npy")) <= 1e-4


def test_loaded_model_is_eval_and_frozen(verifier: SpeakerVerifier) -> None:
    assert not verifier.model.training
    assert not any(p.requires_grad for p in verifier.model.parameters())
    assert verifier.config == SMALL_SV_CONFIG
    assert verifier.embedding_dim == 2560


# --- strict loading --------------------------------------------------------------------------


def _rewrite(tmp_path: Path, small_ckpt: Path, edit: Callable[[dict[str, torch.Tensor]], Any]) -> Path:
    weight = read_state_dict(small_ckpt)
    edit(weight)
    out = tmp_path / "edited.ckpt"
    torch.save(weight, out)
    return out


def test_missing_key_is_named(tmp_path: Path, small_ckpt: Path) -> None:
    path = _rewrite(tmp_path, small_ckpt, lambda w: w.pop("layer3.2.fuse_models.1.local_att.3.bias"))
    with pytest.raises(
        CheckpointError,
        match=r"does not match the ERes2NetV2 speaker-verification model; 1 missing key\(s\): "
        r"layer3\.2\.fuse_models\.1\.local_att\.3\.bias",
    ):
        SpeakerVerifier.load(path)


def test_unexpected_key_is_named(tmp_path: Path, small_ckpt: Path) -> None:
    path = _rewrite(tmp_path, small_ckpt, lambda w: w.update({"seg_2.weight": torch.zeros(16, 16)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): seg_2\.weight"):
        SpeakerVerifier.load(path)


def test_wrong_shape_is_named(tmp_path: Path, small_ckpt: Path) -> None:
    path = _rewrite(tmp_path, small_ckpt, lambda w: w.update({"layer2.0.convs.1.weight": torch.zeros(6, 6, 1, 1)}))
    with pytest.raises(
        CheckpointError, match=r"1 mis-shaped key\(s\): layer2\.0\.convs\.1\.weight \(6, 6, 1, 1\) != \(6, 6, 3, 3\)"
    ):
        SpeakerVerifier.load(path)


def test_missing_num_batches_tracked_is_filled_in(tmp_path: Path, small_ckpt: Path, verifier: SpeakerVerifier) -> None:
    def drop(w: dict[str, torch.Tensor]) -> None:
        for key in [k for k in w if k.endswith("num_batches_tracked")]:
            del w[key]

    loaded = SpeakerVerifier.load(_rewrite(tmp_path, small_ckpt, drop))
    wav = _npy("inputs/ref2_wav_32k.npy")
    torch.testing.assert_close(loaded.embed(wav), verifier.embed(wav), rtol=0, atol=0)


def test_fp16_file_loads_as_fp32(tmp_path: Path, small_ckpt: Path) -> None:
    def half(w: dict[str, torch.Tensor]) -> None:
        w.update({k: v.half() for k, v in w.items() if v.is_floating_point()})

    loaded = SpeakerVerifier.load(_rewrite(tmp_path, small_ckpt, half))
    assert loaded.dtype == torch.float32
    emb = loaded.embed(_npy("inputs/ref_wav_32k.npy"))
    assert _max_err(emb, _npy("expected/sv_small_emb.npy")) < 0.05  # fp16-rounded weights, same model


def test_legacy_torch_save_format_loads(tmp_path: Path, small_ckpt: Path, verifier: SpeakerVerifier) -> None:
    path = tmp_path / "legacy.ckpt"
    torch.save(torch.load(small_ckpt, weights_only=True), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] != b"PK"
    wav = _npy("inputs/ref2_wav_32k.npy")
    torch.testing.assert_close(SpeakerVerifier.load(path).embed(wav), verifier.embed(wav), rtol=0, atol=0)


def test_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a bare state dict of tensors"):
        SpeakerVerifier.load(PARITY / "s2G_small.pth")  # a SoVITS container, not SV weights
    empty = tmp_path / "empty.ckpt"
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3)}, empty)
    with pytest.raises(CheckpointError, match="not an ERes2NetV2 speaker-verification state dict"):
        SpeakerVerifier.load(empty)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"PK not really a zip")
    with pytest.raises(CheckpointError, match="not a torch zip archive"):
        SpeakerVerifier.load(garbage)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        SpeakerVerifier.load(tmp_path / "absent.ckpt")


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("executed",))


@pytest.mark.parametrize("zipped", [True, False])
def test_code_in_the_pickle_is_refused(tmp_path: Path, zipped: bool, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "evil.ckpt"
    payload = {"conv1.weight": torch.zeros(1), "x": _Payload()}
    torch.save(payload, path, pickle_protocol=pickle.HIGHEST_PROTOCOL, _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError, match="builtins.print, which is not on the allow-list"):
        SpeakerVerifier.load(path)
    assert "executed" not in capsys.readouterr().out


def test_truncated_legacy_file_is_a_checkpoint_error(tmp_path: Path, small_ckpt: Path) -> None:
    path = tmp_path / "legacy.ckpt"
    torch.save(torch.load(small_ckpt, weights_only=True), path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    for cut, message in ((5000, "pickle data was truncated"), (len(raw) - 10, "corrupt checkpoint")):
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=message):
            SpeakerVerifier.load(path)


# --- config, random checkpoints, full size ---------------------------------------------------


def _official_table() -> dict[str, tuple[tuple[int, ...], str]]:
    with open(shared_gpt_sovits() / "sv_eres2netv2_keys.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {
        r["key"]: (() if r["shape"] == "scalar" else tuple(int(n) for n in r["shape"].split("x")), r["dtype"])
        for r in rows
    }


def test_config_from_official_ctor_and_derived_sizes() -> None:
    facts = json.loads((shared_gpt_sovits() / "sv_eres2netv2_config.json").read_text())
    config = SVConfig.from_dict(facts["ctor"])
    assert config == SVConfig()
    derived = facts["derived"]
    assert list(config.layer_channels) == derived["layer_out_channels"]
    assert list(config.widths) == derived["block_width(per split)"]
    assert config.embedding_dim == 20480
    with torch.device("meta"):
        model = ERes2NetV2(config)
    assert sum(p.numel() for p in model.parameters()) == derived["n_parameters"]
    small = SVConfig.from_dict(facts["small_variant_in_parity_v2pro"])
    assert small == SMALL_SV_CONFIG and small.widths == (3, 6, 12, 24) and small.embedding_dim == 2560
    with pytest.raises(ValueError, match="TSTP"):
        SVConfig.from_dict({"two_emb_layer": True})


def test_small_random_checkpoint_matches_parity_layout(tmp_path: Path, small_ckpt: Path) -> None:
    path = tmp_path / "sv.ckpt"
    assert write_random_sv_checkpoint(path, seed=3) == SMALL_SV_CONFIG
    ours, official = read_state_dict(path), read_state_dict(small_ckpt)
    assert [(k, v.shape, v.dtype) for k, v in ours.items()] == [(k, v.shape, v.dtype) for k, v in official.items()]
    assert isinstance(torch.load(path, weights_only=True), dict)  # what the official loader can read
    loaded = SpeakerVerifier.load(path)
    emb = loaded.embed(_npy("inputs/ref_wav_32k.npy"))
    assert emb.shape == (1, 2560) and bool(torch.isfinite(emb).all())
    again = random_sv_state_dict(SMALL_SV_CONFIG, seed=3)
    assert all(torch.equal(again[k], ours[k]) for k in ours)
    assert not torch.equal(random_sv_state_dict(SMALL_SV_CONFIG, seed=4)["bn1.weight"], ours["bn1.weight"])


def test_full_size_random_checkpoint_is_the_official_layout_and_embeds(tmp_path: Path) -> None:
    path = tmp_path / "pretrained_eres2netv2w24s4ep4.ckpt"
    write_random_sv_checkpoint(path, seed=0, full_size=True)
    written = read_state_dict(path)
    table = _official_table()
    assert list(written) == list(table)  # same keys, same order
    assert {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in written.items()} == table
    del written
    verifier = SpeakerVerifier.load(path)
    assert verifier.config == SVConfig()
    emb = verifier.embed(np.random.default_rng(0).uniform(-0.5, 0.5, 3200).astype(np.float32))  # 0.1 s
    assert emb.shape == (1, 20480) and bool(torch.isfinite(emb).all())
