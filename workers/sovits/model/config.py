"""SoVITS hyper-parameters of the generations we run (v1, v2, v2Pro, v2ProPlus): what a
checkpoint's ``config`` decides, and the sizes the official code fixes in its classes (so they
never appear in a config).

The generations share one architecture and differ only in: the phone table (v1 322 symbols, else
732); the reference encoder's input (v1 all 1025 spectrogram bins, else the first 704); and, for
the Pro family, the speaker-verification fusion (``sv_emb``, ``prelu``, ``ge_to512``), which frees
``gin_channels`` from the MRTE width (1024 officially). v2ProPlus differs from v2Pro only in
config values (``upsample_initial_channel`` 768, first upsampler kernel 20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Sizes the official classes hard-code. A checkpoint cannot change them.
SSL_DIM = 768  # chinese-hubert-base hidden size, input of both ssl_proj convs
CODEBOOK_SIZE = 1024  # one VQ codebook; the semantic token vocabulary (EOS is T2S-only)
MRTE_HIDDEN = 512  # MRTE works at 512 wide and adds the style vector there (=> gin 512)
MRTE_CHANNELS = 192  # MRTE in/out width (=> hidden_channels 192)
MRTE_HEADS = 4
ATTN_WINDOW = 4  # relative-position window of the text/ssl encoders
FLOW_COUPLINGS = 4  # coupling layers; a parameter-free Flip follows each one
FLOW_KERNEL = 5
FLOW_DILATION = 1
FLOW_WN_LAYERS = 4
STYLE_HIDDEN = 128  # MelStyleEncoder width, heads and kernel
STYLE_HEADS = 2
STYLE_KERNEL = 5
V2_REF_BINS = 704  # v2 ref_enc reads only the first 704 of 1025 spectrogram bins
V1_SYMBOLS = 322
V2_SYMBOLS = 732
SV_DIM = 20480  # ERes2NetV2 ``forward3`` embedding width (2048 channels x 10 frequency rows)
GENERATIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
PRO_GENERATIONS = ("v2Pro", "v2ProPlus")


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class SoVITSConfig:
    """Hyper-parameters of the inference half of ``SynthesizerTrn``. Defaults are the official
    ``s2.json`` (v2 pretrained ``s2G2333k``); ``version`` is one of ``GENERATIONS``."""

    version: str = "v2"
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    gin_channels: int = 512
    # Pro only: width of the speaker-verification embedding ``sv_emb`` reads. 20480 in every
    # official file; the weights decide (a small random SV model for tests is narrower).
    sv_dim: int = SV_DIM
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, ckpt_config: dict[str, Any], version: str | None = None) -> "SoVITSConfig":
        """Build from a checkpoint's ``config`` (``{"data": ..., "model": ..., ...}``); keys that
        only matter for training (dropout, n_layers_q, freeze_quantizer, ...) are ignored.
        ``version`` (what the file header and weights say) overrides the config's own label, as
        in the official loader."""
        data = dict(ckpt_config.get("data") or {})
        model = dict(ckpt_config.get("model") or {})
        defaults = cls()
        kwargs: dict[str, Any] = {}
        for name in ("sampling_rate", "filter_length", "hop_length", "win_length"):
            kwargs[name] = int(data.get(name, getattr(defaults, name)))
        for name in (
            "inter_channels",
            "hidden_channels",
            "filter_channels",
            "n_heads",
            "n_layers",
            "kernel_size",
            "upsample_initial_channel",
            "gin_channels",
            "sv_dim",
        ):
            kwargs[name] = int(model.get(name, getattr(defaults, name)))
        for name in ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes"):
            kwargs[name] = _ints(model.get(name, getattr(defaults, name)))
        kwargs["resblock_dilation_sizes"] = tuple(
            _ints(d) for d in model.get("resblock_dilation_sizes", defaults.resblock_dilation_sizes)
        )
        kwargs["resblock"] = str(model.get("resblock", defaults.resblock))
        kwargs["version"] = version or str(model.get("version", ckpt_config.get("version", "v2")))
        config = cls(**kwargs, extra={k: v for k, v in model.items() if k not in kwargs})
        config.validate()
        return config

    def validate(self) -> None:
        """Reject configs the official architecture cannot build (it would fail on a shape)."""
        if self.version not in GENERATIONS:
            raise ValueError(f"version {self.version!r}: supported generations are {', '.join(GENERATIONS)}")
        if self.resblock != "1":
            raise ValueError(f"resblock {self.resblock!r}: only HiFiGAN resblock '1' (v2) is supported")
        if self.hidden_channels != MRTE_CHANNELS:
            raise ValueError(f"hidden_channels must be {MRTE_CHANNELS} (MRTE width is fixed)")
        if not self.is_pro and self.gin_channels != MRTE_HIDDEN:
            raise ValueError(
                f"gin_channels must be {MRTE_HIDDEN} in {self.version} (the style vector is added in MRTE)"
            )
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(
                f"upsample_rates {self.upsample_rates} multiply to {math.prod(self.upsample_rates)}, "
                f"not hop_length {self.hop_length}"
            )
        if not (
            len(self.upsample_rates) == len(self.upsample_kernel_sizes)
            and len(self.resblock_kernel_sizes) == len(self.resblock_dilation_sizes)
        ):
            raise ValueError("upsample/resblock size lists have mismatched lengths")
        if self.hidden_channels % self.n_heads:
            raise ValueError("hidden_channels must divide by n_heads")

    @property
    def spec_channels(self) -> int:
        return self.filter_length // 2 + 1

    @property
    def is_pro(self) -> bool:
        """v2Pro/v2ProPlus: the style is fused with a speaker-verification embedding."""
        return self.version in PRO_GENERATIONS

    @property
    def n_symbols(self) -> int:
        return V1_SYMBOLS if self.version == "v1" else V2_SYMBOLS

    @property
    def ref_bins(self) -> int:
        return self.spec_channels if self.version == "v1" else V2_REF_BINS

    @property
    def samples_per_code(self) -> int:
        """Waveform samples per 25 Hz semantic code (codes are repeated to 50 Hz frames)."""
        return 2 * self.hop_length
