"""HuBERT content features, prompt semantic tokens and resampling (tiny random HuBERT)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers.sovits.model import HubertContent, SoVITSModel, prompt_semantic, resample, write_tiny_hubert
from workers.sovits.model.ssl import PAD_SAMPLES
from tests.support.official import PARITY

torch.set_num_threads(1)

SMALL = PARITY / "s2G_small.pth"


@pytest.fixture(scope="module")
def hubert(tmp_path_factory: pytest.TempPathFactory) -> HubertContent:
    directory = write_tiny_hubert(tmp_path_factory.mktemp("hubert"))
    assert (directory / "config.json").exists()
    return HubertContent.load(directory)


def _voice(seconds: float, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    gen = torch.Generator().manual_seed(0)
    return 0.3 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(t.shape, generator=gen)


def test_content_features_shape_and_padding(hubert: HubertContent) -> None:
    wav = _voice(3.0)
    feats = hubert(wav)
    # 48000 + 9600 padded samples; HuBERT frames: (S - 400) // 320 + 1.
    assert PAD_SAMPLES == 9600
    assert feats.shape == (1, 768, (48000 + 9600 - 400) // 320 + 1)
    with torch.no_grad():
        direct = hubert.model(torch.cat([wav, torch.zeros(9600)])[None]).last_hidden_state
    torch.testing.assert_close(feats, direct.transpose(1, 2))


def test_prompt_semantic_tokens(hubert: HubertContent) -> None:
    model = SoVITSModel.load(SMALL)
    wav = _voice(3.0)
    tokens = prompt_semantic(hubert, model, wav)
    frames = (48000 + 9600 - 400) // 320 + 1
    assert tokens.shape == (frames // 2,) and tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 1024
    torch.testing.assert_close(tokens, model.extract_latent(hubert(wav))[0, 0])


def test_content_rejects_stereo(hubert: HubertContent) -> None:
    with pytest.raises(ValueError, match="mono"):
        hubert(torch.zeros(2, 16000))


def test_resample_32k_to_16k_keeps_a_tone() -> None:
    sr_in, sr_out, f = 32000, 16000, 440.0
    t_in = np.arange(32000) / sr_in
    out = resample(np.sin(2 * np.pi * f * t_in).astype(np.float32), sr_in, sr_out)
    assert out.shape == (16000,) and out.dtype == torch.float32
    t_out = np.arange(16000) / sr_out
    middle = slice(1000, 15000)  # away from the filter's edge effects
    np.testing.assert_allclose(out.numpy()[middle], np.sin(2 * np.pi * f * t_out)[middle], atol=2e-3)


def test_resample_16k_to_32k_length_and_identity() -> None:
    wav = _voice(0.5)
    assert resample(wav, 16000, 32000).shape == (16000,)
    torch.testing.assert_close(resample(wav, 16000, 16000), wav)
