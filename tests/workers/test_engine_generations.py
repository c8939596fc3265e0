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
    sv = torch.randn(2, model.config.sv_dim, generator=gen) * 0.24
    specs = [torch.rand(1, 1025, 60, generator=gen), torch.rand(1, 1025, 45, generator=gen)]
    style = model.style_vector(specs, [sv[:1], sv[1:]])  # what the voice stores
    voice = VoiceFeatures.from_bytes(_voice(style.numpy().reshape(-1), sv.numpy()).to_bytes())
    assert voice.sv_embedding is not None and voice.sv_embedding.shape == (2, model.config.sv_dim)
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


def _tone_clip(seconds: float, hz: float) -> ReferenceClip:
    rng = np.random.default_rng(int(hz))
    t32, t16 = np.arange(int(32000 * seconds)) / 32000, np.arange(int(16000 * seconds)) / 16000
    wave32 = 0.3 * np.sin(2 * np.pi * hz * t32) + 0.02 * rng.standard_normal(t32.size)
    wave16 = 0.3 * np.sin(2 * np.pi * hz * t16) + 0.02 * rng.standard_normal(t16.size)
    return ReferenceClip(wave32.astype(np.float32), wave16.astype(np.float32))


def test_pro_voice_encoding_fuses_each_clips_sv_embedding(pro_settings: Settings) -> None:
    from workers.sovits.model import SpeakerVerifier

    encoder = GPTSoVITSVoiceEncoder(pro_settings)
    clips = [_tone_clip(3.0, 170.0), _tone_clip(2.5, 230.0)]
    voice = encoder.encode(clips, None, "en")
    verifier = SpeakerVerifier.load(encoder.paths.sv)
    expected_sv = torch.cat([verifier.embed(c.audio_32k) for c in clips])  # one row per clip, in order
    assert voice.sv_embedding is not None
    np.testing.assert_allclose(voice.sv_embedding, expected_sv.numpy(), rtol=0, atol=1e-6)
    # The stored style is the official fusion of each clip's spectrogram with its own embedding.
    from workers.sovits.model import reference_spectrogram

    specs = [reference_spectrogram(torch.from_numpy(c.audio_32k)) for c in clips]
    style = encoder.model.style_vector(specs, [expected_sv[:1], expected_sv[1:]])
    np.testing.assert_allclose(voice.style, style.numpy().reshape(-1), rtol=0, atol=1e-6)
    without_sv = encoder.model.style_vector(specs, [torch.zeros_like(expected_sv[:1])] * 2)
    assert np.abs(voice.style - without_sv.numpy().reshape(-1)).max() > 1e-3


def test_pro_voice_encoding_without_the_sv_file_fails_with_a_clear_code(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "v2Pro")
    encoder = GPTSoVITSVoiceEncoder(settings)
    encoder.paths.sv.unlink()
    with pytest.raises(PermanentJobError) as info:
        encoder.encode([_tone_clip(3.0, 170.0)], None, "en")
    assert info.value.code == "model_unavailable" and "pretrained_eres2netv2w24s4ep4" in str(info.value)


def test_onnx_graphs_are_compiled_under_home_never_beside_the_models(tmp_path: Path) -> None:
    """Deployments mount the models read-only (infra/k8s, infra/compose): the exported graphs go
    to ``$VOXMILL_HOME/compiled``."""
    root = tmp_path / "models"
    make_tiny(root)
    settings = Settings(home=tmp_path / "home", models_dir=root, t2s_runtime="onnx", sovits_runtime="onnx")
    semantic, acoustic = GPTSoVITSSemantic(settings), GPTSoVITSAcoustic(settings)
    assert semantic.step is not None and acoustic.onnx is not None
    compiled = sorted(p.name for p in settings.compiled_dir.iterdir())
    assert any(name.startswith("t2s-step-") for name in compiled), compiled
    assert any(name.startswith("sovits-decoder-") for name in compiled), compiled
    assert not list(root.rglob("*.onnx"))
