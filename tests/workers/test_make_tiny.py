"""``voxmill models make-tiny --generation``: random models of each generation in the official
formats, at the generation's official file names, loadable by our loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from infra.cli import main as voxmill
from workers.assets import GENERATION_FILES, make_tiny
from workers.gpt.model import Text2SemanticModel
from workers.sovits.model import SoVITSModel, detect_version
from workers.checkpoints import read_container

torch.set_num_threads(1)


@pytest.mark.parametrize(("generation", "phone_rows"), [("v1", 512), ("v2", 732)])
def test_make_tiny_writes_a_loadable_generation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], generation: str, phone_rows: int
) -> None:
    assert voxmill(["models", "make-tiny", str(tmp_path), "--generation", generation, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    gpt_name, sovits_name = GENERATION_FILES[generation]
    gpt, sovits = tmp_path / gpt_name, tmp_path / sovits_name
    assert ("VOXMILL_SOVITS_CHECKPOINT=" in out) == (generation != "v2")
    t2s = Text2SemanticModel.load(gpt)
    assert t2s.config.phoneme_vocab_size == phone_rows and t2s.config.num_layers == 2
    model = SoVITSModel.load(sovits)
    assert model.config.version == generation and model.config.inter_channels == 32
    assert sovits.read_bytes()[:2] == b"PK"
    for folder in ("chinese-hubert-base", "chinese-roberta-wwm-ext-large"):
        assert (tmp_path / folder / "config.json").is_file()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "tiny-random" and f"generation={generation}" in manifest["source"]
    assert {gpt_name, sovits_name} <= set(manifest["files"])


@pytest.mark.parametrize(("generation", "magic"), [("v2Pro", b"05"), ("v2ProPlus", b"06")])
def test_make_tiny_writes_pro_sovits_files(tmp_path: Path, generation: str, magic: bytes) -> None:
    # The SV model of a Pro pair is written by the `sv` branch's writer (wired by the lead).
    gpt, sovits = make_tiny(tmp_path, generation=generation)
    assert (gpt.name, sovits.relative_to(tmp_path).as_posix()) == GENERATION_FILES[generation]
    assert sovits.read_bytes()[:2] == magic
    assert detect_version(read_container(sovits)) == generation
    model = SoVITSModel.load(sovits)
    assert model.is_pro and model.config.gin_channels == 32
    assert model.config.upsample_kernel_sizes[0] == (20 if generation == "v2ProPlus" else 16)
    assert Text2SemanticModel.load(gpt).config.phoneme_vocab_size == 732


def test_make_tiny_refuses_unknown_generation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="v3"):
        make_tiny(tmp_path, generation="v3")
    with pytest.raises(SystemExit):
        voxmill(["models", "make-tiny", str(tmp_path), "--generation", "v4"])
