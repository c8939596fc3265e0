"""The GPT-SoVITS v2Pro speaker-verification model (ERes2NetV2 from 3D-Speaker): official SV
weights -> ``SpeakerVerifier``, whose ``embed`` turns a 32 kHz reference into the embedding that
v2Pro/v2ProPlus SoVITS fuse into their style vector.

Format and model facts (GPT-SoVITS ``sv.py`` + ``eres2net/``; CHECKPOINTS.md section 7.4):

* File: ``GPT_SoVITS/pretrained_models/sv/pretrained_eres2netv2w24s4ep4.ckpt``, a bare state dict
  (1001 keys, 53,513,632 parameters at the official size) loaded strictly. There is no config in
  it: the official code always builds ``ERes2NetV2(baseWidth=24, scale=4, expansion=4)`` with
  ``m_channels`` 64, ``embedding_size`` 192, ``num_blocks`` [3, 4, 6, 3]. We read ``m_channels``,
  ``embedding_size`` and ``num_blocks`` off the weights (so small test models load too) and check
  every key and shape against the model they give. ``num_batches_tracked`` may be absent from a
  real file; it is unused and filled in.
* Widths: layer i (i = 0..3) has ``planes = m_channels * 2**i``, output ``planes * expansion``,
  and splits of ``width = floor(planes * baseWidth / 64)``, ``scale`` of them.
* Only ``forward3`` is used: fbank ``[B, T, 80]`` -> image ``[B, 1, 80, T]``; stem conv3x3 -> BN
  -> ReLU; layer1..4 (strides 1, 2, 2, 2; layer3/4 chain their splits with AFF); ``layer3_ds``
  (conv3x3 stride 2) on layer3's output; ``fuse34`` = AFF(layer4 out, layer3_ds out) ->
  ``[B, C, 10, T']`` -> ``[B, C*10, T']`` (index c*10 + f) -> mean over time. Official size:
  ``[B, 20480]``. The TSTP pooling and ``seg_1`` are in the checkpoint but never run.
* Inside blocks the activation is Hardtanh(0, 20); only the stem uses a plain ReLU.
* Input path: divide by min(2, peak) when the peak is > 1, torchaudio's 32k -> 16k resampler,
  Kaldi fbank (``fbank``), model; fp32 front end whatever the model dtype (the official fp16 GPU
  path also runs the fbank in fp16; we do not copy that).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from workers.checkpoints import CheckpointError, cast_state_dict, read_state_dict

from .checkpoint import check_keys
from .fbank import kaldi_fbank, resample_32k_to_16k

_BLOCK_CLAMP = 20.0  # Hardtanh(0, 20) inside the residual blocks
_AFF_REDUCTION = 4


@dataclass(frozen=True)
class SVConfig:
    """``ERes2NetV2`` constructor arguments; the defaults are the official model's."""

    num_blocks: tuple[int, ...] = (3, 4, 6, 3)
    m_channels: int = 64
    feat_dim: int = 80
    embedding_size: int = 192
    base_width: int = 24
    scale: int = 4
    expansion: int = 4

    def __post_init__(self) -> None:
        if len(self.num_blocks) != 4 or min(self.num_blocks) < 1:
            raise ValueError(f"num_blocks must be four positive counts, got {self.num_blocks}")
        if self.scale < 2:
            raise ValueError(f"scale must be at least 2, got {self.scale}")
        if min(self.widths) < 1:
            raise ValueError(f"m_channels {self.m_channels} with baseWidth {self.base_width} gives empty splits")

    @classmethod
    def from_dict(cls, ctor: dict[str, Any]) -> "SVConfig":
        """From the official constructor keywords (``baseWidth`` or ``base_width``; see
        sv_eres2netv2_config.json ``ctor``). Only the TSTP pooling with one embedding layer
        exists here; other options are refused."""
        if str(ctor.get("pooling_func", "TSTP")) != "TSTP" or bool(ctor.get("two_emb_layer", False)):
            raise ValueError("only pooling_func TSTP without two_emb_layer (the official SV model) is supported")
        defaults = cls()
        kwargs: dict[str, Any] = {"num_blocks": tuple(int(n) for n in ctor.get("num_blocks", defaults.num_blocks))}
        for name in ("m_channels", "feat_dim", "embedding_size", "scale", "expansion"):
            kwargs[name] = int(ctor.get(name, getattr(defaults, name)))
        kwargs["base_width"] = int(ctor.get("baseWidth", ctor.get("base_width", defaults.base_width)))
        return cls(**kwargs)

    @classmethod
    def from_state_dict(cls, weight: dict[str, torch.Tensor]) -> "SVConfig":
        """The official config with ``m_channels``, ``embedding_size`` and ``num_blocks`` read
        off a state dict (the file stores no config); raises ``KeyError`` if it is not one."""
        counts = [0, 0, 0, 0]
        for key in weight:
            match = re.match(r"layer([1-4])\.(\d+)\.", key)
            if match:
                layer, block = int(match.group(1)) - 1, int(match.group(2))
                counts[layer] = max(counts[layer], block + 1)
        return cls(
            num_blocks=tuple(counts),
            m_channels=int(weight["conv1.weight"].shape[0]),
            embedding_size=int(weight["seg_1.weight"].shape[0]),
        )

    @property
    def planes(self) -> tuple[int, ...]:
        return tuple(self.m_channels * 2**i for i in range(4))

    @property
    def layer_channels(self) -> tuple[int, ...]:
        """Output channels of layer1..layer4 (official: 256, 512, 1024, 2048)."""
        return tuple(p * self.expansion for p in self.planes)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per split in layer1..layer4 (official: 24, 48, 96, 192)."""
        return tuple(int(math.floor(p * (self.base_width / 64.0))) for p in self.planes)

    @property
    def out_freq(self) -> int:
        """Frequency rows left after the three stride-2 stages (80 -> 10)."""
        f = self.feat_dim
        for _ in range(3):
            f = (f + 1) // 2
        return f

    @property
    def embedding_dim(self) -> int:
        """Width of the ``forward3`` embedding: fuse34 channels x frequency rows (20480)."""
        return self.layer_channels[3] * self.out_freq


SMALL_SV_CONFIG = SVConfig(m_channels=8, embedding_size=16)  # parity-v2pro's sv_small.ckpt


class AFF(nn.Module):
    """Attentional feature fusion: a learned per-position mix of ``x`` and ``y``."""

    def __init__(self, channels: int, r: int = _AFF_REDUCTION) -> None:
        super().__init__()
        inter = channels // r
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, 1),
            nn.BatchNorm2d(inter),
            nn.SiLU(),
            nn.Conv2d(inter, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))  # in (0, 2)
        return x * w + y * (2.0 - w)


class Block(nn.Module):
    """``BasicBlockERes2NetV2`` (``fuse=False``: splits chained by sums) and
    ``BasicBlockERes2NetV2AFF`` (``fuse=True``: chained by AFF)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, width: int, scale: int, expansion: int, fuse: bool
    ) -> None:
        super().__init__()
        out_planes = planes * expansion
        self.width = width
        self.conv1 = nn.Conv2d(in_planes, width * scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale))
        self.fuse_models = nn.ModuleList(AFF(width) for _ in range(scale - 1)) if fuse else None
        self.conv3 = nn.Conv2d(width * scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.hardtanh(self.bn1(self.conv1(x)), 0.0, _BLOCK_CLAMP)  # [b, width*scale, f, t]
        splits = torch.split(out, self.width, dim=1)
        outputs: list[torch.Tensor] = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i == 0:
                sp = splits[0]
            elif self.fuse_models is None:
                sp = sp + splits[i]
            else:
                sp = self.fuse_models[i - 1](sp, splits[i])
            sp = F.hardtanh(bn(conv(sp)), 0.0, _BLOCK_CLAMP)
            outputs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return F.hardtanh(out + self.shortcut(x), 0.0, _BLOCK_CLAMP)


class ERes2NetV2(nn.Module):
    """The network, with the official module names (so the state dict is the official one)."""

    def __init__(self, config: SVConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.conv1 = nn.Conv2d(1, c.m_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c.m_channels)
        layers = []
        in_planes = c.m_channels
        for i, (n_blocks, planes, width) in enumerate(zip(c.num_blocks, c.planes, c.widths)):
            blocks = []
            for j in range(n_blocks):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                blocks.append(Block(in_planes, planes, stride, width, c.scale, c.expansion, fuse=i >= 2))
                in_planes = planes * c.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.layer3_ds = nn.Conv2d(c.layer_channels[2], c.layer_channels[3], 3, stride=2, padding=1, bias=False)
        self.fuse34 = AFF(c.layer_channels[3])
        # Unused at inference (TSTP pooling head); kept so the official state dict loads strictly.
        self.seg_1 = nn.Linear(2 * c.embedding_dim, c.embedding_size)

    def stages(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """fbank ``[B, T, F]`` -> every stage output ``[B, C, F', T']`` (``forward3`` internals)."""
        x = feats.transpose(1, 2).unsqueeze(1)  # [b, 1, f, t]: frequency is the image height
        stem = F.relu(self.bn1(self.conv1(x)))
        layer1 = self.layer1(stem)
        layer2 = self.layer2(layer1)
        layer3 = self.layer3(layer2)
        layer4 = self.layer4(layer3)
        layer3_ds = self.layer3_ds(layer3)
        fuse34 = self.fuse34(layer4, layer3_ds)  # [b, C, f/8, t/8]
        return {
            "stem": stem,
            "layer1": layer1,
            "layer2": layer2,
            "layer3": layer3,
            "layer4": layer4,
            "layer3_ds": layer3_ds,
            "fuse34": fuse34,
        }

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """fbank ``[B, T, F]`` -> embedding ``[B, C * F/8]`` (official ``forward3``)."""
        fuse34 = self.stages(feats)["fuse34"]
        return fuse34.flatten(1, 2).mean(-1)  # [b, C*f', t'] -> [b, C*f']


class SpeakerVerifier:
    """A loaded SV model: ``embed(wav_32k) -> [1, D]`` (D = 20480 for the official weights)."""

    def __init__(self, model: ERes2NetV2) -> None:
        self.model = model

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "SpeakerVerifier":
        """Read an official SV state dict, check every key and shape, return it in eval mode."""
        weight = cast_state_dict(read_state_dict(path), torch.float32)
        try:
            config = SVConfig.from_state_dict(weight)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: not an ERes2NetV2 speaker-verification state dict ({exc})") from exc
        with torch.device("meta"):
            model = ERes2NetV2(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for key in expected:
            if key.endswith(".num_batches_tracked") and key not in weight:
                weight[key] = torch.tensor(0, dtype=torch.long)  # BatchNorm's own fill-in; unused in eval
        check_keys(weight, expected, path, model="the ERes2NetV2 speaker-verification model")
        model.load_state_dict(weight, strict=True, assign=True)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(model)

    @property
    def config(self) -> SVConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.conv1.weight.dtype

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def features(self, wav_32k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mono 32 kHz waveform ``[S]`` or ``[1, S]`` -> fbank ``[1, T, 80]`` (fp32)."""
        wav = torch.from_numpy(np.ascontiguousarray(wav_32k)) if isinstance(wav_32k, np.ndarray) else wav_32k
        if wav.dim() == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.dim() != 1:
            raise ValueError(f"expected a mono waveform [S] or [1, S], got shape {tuple(wav.shape)}")
        wav = wav.to(device=self.device, dtype=torch.float32)
        peak = wav.abs().max()
        if peak > 1:
            wav = wav / torch.clamp(peak, max=2.0)
        return kaldi_fbank(resample_32k_to_16k(wav)).unsqueeze(0)

    @torch.inference_mode()
    def embed(self, wav_32k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mono 32 kHz reference -> SV embedding ``[1, D]`` in the model's dtype (official
        ``compute_embedding3`` after the 16 kHz resample). Needs at least 799 samples (one 25 ms frame)."""
        emb: torch.Tensor = self.model(self.features(wav_32k).to(self.dtype))
        return emb


@torch.no_grad()
def random_sv_state_dict(config: SVConfig, seed: int) -> dict[str, torch.Tensor]:
    """Official-layout weights of a random ERes2NetV2, made like parity-v2pro's: seeded default
    init, N(0, 0.02) noise on every tensor that would be constant (BatchNorm gains and biases),
    running means ~ N(0, 0.1) and variances ~ U(0.5, 1.5). The state dict keeps its
    ``_metadata``, as ``torch.save(model.state_dict())`` writes it."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ERes2NetV2(config)
    state = model.state_dict()
    for key, tensor in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(tensor.shape, generator=gen)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(tensor.shape, generator=gen)
        elif tensor.is_floating_point() and tensor.numel() > 1 and bool((tensor == tensor.flatten()[0]).all()):
            state[key] = tensor + 0.02 * torch.randn(tensor.shape, generator=gen)
    return state


def write_random_sv_checkpoint(
    path: str | Path,
    config: SVConfig | dict[str, Any] | None = None,
    seed: int = 0,
    full_size: bool = False,
) -> SVConfig:
    """Write a random SV model in the official format (bare fp32 state dict, plain torch zip).
    Without ``config``: the official size if ``full_size`` (1001 keys, ~214 MB), else the small
    parity config (m_channels 8, ~3.5 MB). Returns the config written."""
    if config is None:
        config = SVConfig() if full_size else SMALL_SV_CONFIG
    elif isinstance(config, dict):
        config = SVConfig.from_dict(config)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_sv_state_dict(config, seed), path)
    return config


__all__ = [
    "AFF",
    "ERes2NetV2",
    "SMALL_SV_CONFIG",
    "SVConfig",
    "SpeakerVerifier",
    "random_sv_state_dict",
    "write_random_sv_checkpoint",
]
