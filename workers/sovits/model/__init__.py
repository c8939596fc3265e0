"""Our own inference implementation of the GPT-SoVITS SoVITS model (generations v1, v2, v2Pro,
v2ProPlus), and its features.

Public API (batch 1 everywhere; tensors in, tensors out):

* ``SoVITSModel.load(path, device="cpu", dtype=torch.float32)`` -> eval model from an official
  ``.pth`` (strict keys; v3/v4/LoRA -> ``UnsupportedModelVersion``); ``model.config.version``.
* ``reference_spectrogram(wav32k[S]) -> [1, 1025, F]``; ``model.style_vector([spec, ...],
  sv_embeddings=None) -> [1, gin, 1]`` (several references averaged; Pro models fuse one
  ``[1, 20480]`` SV embedding per reference first; compute once per voice and store it).
* ``model.decode(codes[1,1,T], phones[1,P], style, noise_scale=0.5, speed=1.0, generator=None)
  -> wav[1, 1, 1280*T]`` at 32 kHz; ``model.decode_with_references(..., specs, ...,
  sv_embeddings=None)``.
* ``model.extract_latent(ssl[1,768,T]) -> codes[1,1,T//2]``; ``HubertContent.load(dir)`` and
  ``prompt_semantic(hubert, model, wav16k) -> codes[T']`` in ``ssl``.
* ``resample(wav, orig_sr, target_sr)`` (soxr HQ, librosa's default).
* ``write_random_checkpoint(path, config_dict=None, seed=0, full_size=False, generation=None)``
  and ``generation_config(generation, full_size)`` for tests/benchmarks.
* Speaker verification (v2Pro/v2ProPlus): ``SpeakerVerifier.load(path, device="cpu",
  dtype=torch.float32)`` and ``.embed(wav32k[S]) -> [1, 20480]`` in ``sv``;
  ``write_random_sv_checkpoint(path, config=None, seed=0, full_size=False)``.
* ONNX Runtime decoder: ``onnx_decoder`` (not imported here: it pulls in onnx/onnxruntime).
"""

from .checkpoint import detect_version, generation_config, load_sovits, v2_config, write_random_checkpoint
from .config import GENERATIONS, SoVITSConfig
from .features import reference_spectrogram, resample
from .ssl import HubertContent, prompt_semantic, write_tiny_hubert
from .sv import SpeakerVerifier, SVConfig, write_random_sv_checkpoint
from .synthesizer import SoVITSModel

__all__ = [
    "GENERATIONS",
    "HubertContent",
    "SoVITSConfig",
    "SoVITSModel",
    "SVConfig",
    "SpeakerVerifier",
    "detect_version",
    "generation_config",
    "load_sovits",
    "prompt_semantic",
    "reference_spectrogram",
    "resample",
    "v2_config",
    "write_random_checkpoint",
    "write_random_sv_checkpoint",
    "write_tiny_hubert",
]
