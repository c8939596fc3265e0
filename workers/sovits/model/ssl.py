"""HuBERT content features of a reference voice, and its prompt semantic tokens.

The official model is ``chinese-hubert-base`` loaded with ``transformers.HubertModel`` from a
local folder (config.json + weights). Inference bypasses the feature extractor: no
normalisation, raw 16 kHz float audio, and ``int(32000 * 0.3)`` = 9600 zeros appended (a quirk:
the pad length is computed at 32 kHz, so it is 0.6 s at 16 kHz). Output ``last_hidden_state``
``[1, T, 768]`` at 50 Hz, used channels-first ``[1, 768, T]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import SSL_DIM
from .synthesizer import SoVITSModel

if TYPE_CHECKING:
    from transformers import HubertModel

SSL_SAMPLE_RATE = 16000
PAD_SAMPLES = int(32000 * 0.3)  # 9600, see module docstring
# The official UI refuses references outside 3..10 s (at 16 kHz); callers should too.
MIN_REFERENCE_SAMPLES = 3 * SSL_SAMPLE_RATE
MAX_REFERENCE_SAMPLES = 10 * SSL_SAMPLE_RATE


class HubertContent:
    """A loaded HuBERT: ``content(wav16k[S]) -> [1, 768, T]``."""

    def __init__(self, model: "HubertModel") -> None:
        if model.config.hidden_size != SSL_DIM:
            raise ValueError(f"HuBERT hidden size {model.config.hidden_size}; SoVITS needs {SSL_DIM}")
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "HubertContent":
        """Load a local ``chinese-hubert-base``-style folder (never touches the network)."""
        from transformers import HubertModel

        model = HubertModel.from_pretrained(str(path), local_files_only=True)
        return cls(model.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def __call__(self, wav16k: torch.Tensor) -> torch.Tensor:
        if wav16k.dim() != 1:
            raise ValueError(f"expected a mono 16 kHz waveform [S], got shape {tuple(wav16k.shape)}")
        wav = torch.cat([wav16k.to(torch.float32), torch.zeros(PAD_SAMPLES)])
        wav = wav.to(device=self.device, dtype=self.dtype)
        hidden = self.model(wav[None]).last_hidden_state  # [1, T, 768]
        return hidden.transpose(1, 2)  # [1, 768, T]


def prompt_semantic(hubert: HubertContent, model: SoVITSModel, wav16k: torch.Tensor) -> torch.Tensor:
    """Reference audio at 16 kHz ``[S]`` -> its semantic tokens ``[T]`` (the T2S prompt)."""
    return model.extract_latent(hubert(wav16k))[0, 0]


def write_tiny_hubert(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``HubertModel`` (hidden 768 as SoVITS needs; 1 layer, narrow convs and
    feed-forward) with ``save_pretrained``: a stand-in for chinese-hubert-base in tests. Keeps the
    official conv strides, so frames are still 20 ms (T = (S - 400) // 320 + 1)."""
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=SSL_DIM,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(config)
    directory = Path(directory)
    model.save_pretrained(directory)
    return directory
