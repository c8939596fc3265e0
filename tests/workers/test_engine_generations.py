"""The GPT-SoVITS engines on models of the other generations (tiny random files written by
``make_tiny``): v1 end to end through the semantic and acoustic engines, a Pro model decoding a
voice's stored (SV-fused) style, and the clear failures when a voice does not fit the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.engine import ReferenceClip, SynthesisParams, VoiceFeatures
from jobs.errors import PermanentJobError
from jobs.settings import Settings
from workers.assets import make_tiny
from workers.gpt.engine import GPTSoVITSSemantic
from workers.sovits.engine import GPTSoVITSAcoustic, GPTSoVITSVoiceEncoder

torch.set_num_threads(1)


def _settings(tmp_path: Path, generation: str) -> Settings:
    root = tmp_path / generation
    gpt, sovits = make_tiny(root, generation=generation)
    return Settings(home=tmp_path, models_dir=root, gpt_checkpoint=gpt, sovits_checkpoint=sovits)


@pytest.fixture(scope="module")
def pro_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("pro"), "v2ProPlus")


def _voice(style: np.ndarray, sv: np.ndarray | None = None) -> VoiceFeatures:
    return VoiceFeatures(
        prompt_text=None, prompt_language="en", prompt_semantic=None, style=style, sv_embedding=sv
    )


def test_v1_models_render_through_both_engines(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "v1")
    semantic, acoustic = GPTSoVITSSemantic(settings), GPTSoVITSAcoustic(settings)
    assert semantic.model.config.phone_table == "v1" and acoustic.model.config.version == "v1"
    style = acoustic.model.style_vector([torch.rand(1, 1025, 60, generator=torch.Generator().manual_seed(0))])
    voice = _voice(style.numpy().reshape(-1))
    params = SynthesisParams(seed=1)
    tokens = semantic.text_to_semantic("Hello there, general.", "en", voice, params)
    assert len(tokens.phones) > 0 and int(tokens.phones.max()) < 322
    wav = acoustic.synthesize(tokens, voice, params)
    assert wav.sample_rate == 32000 and len(wav.samples) == 1280 * len(tokens.tokens)


def test_pro_acoustic_decodes_the_stored_style_and_refuses_a_v2_voice(pro_settings: Settings) -> None:
    settings = pro_settings
    acoustic = GPTSoVITSAcoustic(settings)
    model = acoustic.model
    gen = torch.Generator().manual_seed(0)
    sv = torch.randn(2, 20480, generator=gen) * 0.24
    specs = [torch.rand(1, 1025, 60, generator=gen), torch.rand(1, 1025, 45, generator=gen)]
    style = model.style_vector(specs, [sv[:1], sv[1:]])  # what the voice stores
    voice = VoiceFeatures.from_bytes(_voice(style.numpy().reshape(-1), sv.numpy()).to_bytes())
    assert voice.sv_embedding is not None and voice.sv_embedding.shape == (2, 20480)
    semantic = GPTSoVITSSemantic(settings)
    params = SynthesisParams(seed=2, noise_scale=0.0)
    tokens = semantic.text_to_semantic("Hello there.", "en", voice, params)
    wav = acoustic.synthesize(tokens, voice, params)
    codes = torch.as_tensor(tokens.tokens).view(1, 1, -1)
    phones = torch.as_tensor(tokens.phones).view(1, -1)
    expected = model.decode_with_references(codes, phones, specs, 0.0, sv_embeddings=[sv[:1], sv[1:]])
    np.testing.assert_allclose(wav.samples, expected[0, 0].numpy(), rtol=0, atol=1e-6)
    with pytest.raises(PermanentJobError) as info:
        acoustic.synthesize(tokens, _voice(np.zeros(512, np.float32)), params)
    assert info.value.code == "voice_model_mismatch" and "v2ProPlus" in str(info.value)


def test_pro_voice_encoding_needs_the_sv_model(pro_settings: Settings) -> None:
    encoder = GPTSoVITSVoiceEncoder(pro_settings)
    clip = ReferenceClip(np.zeros(32000 * 3, np.float32), np.zeros(16000 * 3, np.float32))
    with pytest.raises(PermanentJobError) as info:
        encoder.encode([clip], None, "en")
    assert info.value.code == "model_unavailable"
