"""Official SoVITS checkpoints (``*.pth``) <-> ``SoVITSModel``: version check, strict key check,
weight-norm folding, and random checkpoints in the official layout for tests and benchmarks.

Format facts (RVC-Boss/GPT-SoVITS; the container itself is read by ``workers.checkpoints``):

* ``weight`` is the generator's state dict minus every ``enc_q.*`` key, all fp16 (the VQ
  buffers too: ``inited`` is stored as fp16 1.0). A full v2 file has 673 keys; its parameters
  (excluding the four ``quantizer`` buffers) number 40,815,744.
* Weight-norm convs are stored with the old ``weight_g``/``weight_v`` names (see
  ``weight_norm``); flows sit at even indices only (odd ones are parameter-free flips).
* Version, as the official loader decides it: the two-byte header ``05`` v2Pro / ``06``
  v2ProPlus (``02``-``04`` v3/v4 and LoRA: refused); otherwise the rows of
  ``enc_p.text_embedding.weight`` (322 -> v1, else v2; the ``00``/``01`` headers are overruled by
  them, as officially). Keys the official loader would silently drop under ``strict=False``
  also speak: ``sv_emb.weight`` marks the Pro family (a header-less Pro file is named by its
  config's version, else by its first upsampler: kernel 20 is v2ProPlus), ``cfm.*`` and friends
  v3/v4. The official md5 and file-size probes are skipped: the md5 table only names the official
  pretrained files, whose weights say the same, and the size probe is wrong for small files.
* The official loader uses ``strict=False`` and so silently runs half-random models; we refuse
  any missing, unexpected or mis-shaped key. The one exception: ``enc_q.*`` keys (posterior
  encoder, training only), which the official pretrained base files still carry, are dropped.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from workers.checkpoints import (
    CheckpointError,
    Container,
    UnsupportedModelVersion,
    cast_state_dict,
    read_container,
    write_container,
)

from . import weight_norm
from .config import GENERATIONS, PRO_GENERATIONS, V1_SYMBOLS, V2_SYMBOLS, SoVITSConfig
from .synthesizer import SoVITSModel

_TRAINING_ONLY_PREFIX = "enc_q."
SUPPORTED = "voxmill runs GPT-SoVITS " + ", ".join(GENERATIONS[:-1]) + f" and {GENERATIONS[-1]} models"
# Keys only the vocoder-based v3/v4 models have: refused even without a header.
_V3_MARKERS = ("cfm.", "bridge.", "wns1.")
_PRO_MARKER = "sv_emb.weight"

# The official s2.json v2 config (model + data sections that inference reads).
_V2_CONFIG: dict[str, Any] = {
    "data": {
        "max_wav_value": 32768.0,
        "sampling_rate": 32000,
        "filter_length": 2048,
        "hop_length": 640,
        "win_length": 2048,
        "n_mel_channels": 128,
        "mel_fmin": 0.0,
        "mel_fmax": None,
        "add_blank": True,
        "n_speakers": 300,
        "cleaned_text": True,
    },
    "model": {
        "inter_channels": 192,
        "hidden_channels": 192,
        "filter_channels": 768,
        "n_heads": 2,
        "n_layers": 6,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "upsample_rates": [10, 8, 2, 2, 2],
        "upsample_initial_channel": 512,
        "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3,
        "use_spectral_norm": False,
        "gin_channels": 512,
        "semantic_frame_rate": "25hz",
        "freeze_quantizer": True,
        "version": "v2",
    },
    "train": {"segment_size": 20480},
    "version": "v2",
}
# What the other generations' official configs change (s2v2Pro.json, s2v2ProPlus.json; v1
# shares s2.json). Only ``version`` tells v1 from v2 in a config; the weights decide at load.
_GENERATION_DELTAS: dict[str, dict[str, Any]] = {
    "v1": {},
    "v2": {},
    "v2Pro": {"gin_channels": 1024, "p_dropout": 0.0},
    "v2ProPlus": {
        "gin_channels": 1024,
        "p_dropout": 0.0,
        "upsample_initial_channel": 768,
        "upsample_kernel_sizes": [20, 16, 8, 2, 2],
    },
}
# Shrunk where the official classes allow it (hidden is fixed by MRTE, and so is gin outside the
# Pro family, see config.py). The Pro sizes are those of the shared parity-v2pro set.
_SMALL_MODEL = {
    "inter_channels": 32,
    "filter_channels": 64,
    "n_layers": 2,
    "upsample_initial_channel": 64,
}
_SMALL_PRO = {"v2Pro": {"gin_channels": 32}, "v2ProPlus": {"gin_channels": 32, "upsample_initial_channel": 96}}


def generation_config(generation: str = "v2", full_size: bool = True) -> dict[str, Any]:
    """An official-layout ``config`` dict of a generation: the real sizes of its official config
    file, or a small variant (seconds to build and run)."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown generation {generation!r}; {SUPPORTED}")
    config = copy.deepcopy(_V2_CONFIG)
    config["model"].update(copy.deepcopy(_GENERATION_DELTAS[generation]))
    if not full_size:
        config["model"].update(_SMALL_MODEL)
        config["model"].update(_SMALL_PRO.get(generation, {}))
    config["model"]["version"] = config["version"] = generation
    return config


def v2_config(full_size: bool = True) -> dict[str, Any]:
    """An official-layout v2 ``config`` dict: the real s2.json sizes, or a small variant."""
    return generation_config("v2", full_size)


def detect_version(container: Container, path: str | Path = "") -> str:
    """The generation of a checkpoint (one of ``GENERATIONS``); raises
    ``UnsupportedModelVersion`` for v3/v4 and LoRA files."""
    where = f"{path}: " if path else ""
    header = container.header_version
    if header is not None and header not in GENERATIONS:
        raise UnsupportedModelVersion(f"{where}a GPT-SoVITS {header} model (file header); {SUPPORTED}")
    for marker in _V3_MARKERS:
        if any(k.startswith(marker) for k in container.weight):
            raise UnsupportedModelVersion(
                f"{where}has '{marker}*' weights, so it is a GPT-SoVITS v3/v4 model; {SUPPORTED}"
            )
    if header in PRO_GENERATIONS:
        return header
    if _PRO_MARKER in container.weight:
        named = str((container.config.get("model") or {}).get("version", container.config.get("version", "")))
        if named in PRO_GENERATIONS:
            return named
        first_up = container.weight.get("dec.ups.0.weight_v")
        return "v2ProPlus" if first_up is not None and int(first_up.shape[-1]) == 20 else "v2Pro"
    embedding = container.weight.get("enc_p.text_embedding.weight")
    if embedding is None:
        return "v2"  # the strict key check reports the missing key
    rows = int(embedding.shape[0])
    if rows == V1_SYMBOLS:
        return "v1"
    if rows != V2_SYMBOLS:
        raise CheckpointError(
            f"{where}enc_p.text_embedding.weight has {rows} rows; v2 has {V2_SYMBOLS}, v1 {V1_SYMBOLS}"
        )
    return "v2"


def _list(keys: set[str], limit: int = 8) -> str:
    shown = sorted(keys)[:limit]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more


def check_keys(
    found: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    path: str | Path,
    model: str = "the SoVITS v2 model of its config",
) -> None:
    """Raise ``CheckpointError`` unless ``found`` has exactly the ``expected`` keys and shapes;
    ``model`` names what the file was checked against in the message."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list(unexpected)}")
    wrong = {
        f"{k} {tuple(found[k].shape)} != {expected[k]}"
        for k in set(found) & set(expected)
        if tuple(found[k].shape) != expected[k]
    }
    if wrong:
        problems.append(f"{len(wrong)} mis-shaped key(s): {_list(wrong)}")
    if problems:
        raise CheckpointError(
            f"{path}: does not match {model}; " + "; ".join(problems)
        )


def load_sovits(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SoVITSModel:
    """Read, check and load an official v1/v2/v2Pro/v2ProPlus checkpoint; the model comes back
    in eval mode."""
    container = read_container(path)
    version = detect_version(container, path)
    try:
        # The header and weights decide the version, as in the official loader, whatever the
        # config says.
        config = SoVITSConfig.from_dict(container.config, version=version)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unusable model config ({exc})") from exc
    # fp16 on disk; fold and load in fp32 (as the official fp32 model does), then cast.
    weight = cast_state_dict(
        {k: v for k, v in container.weight.items() if not k.startswith(_TRAINING_ONLY_PREFIX)}, torch.float32
    )
    sv_weight = weight.get(f"{_PRO_MARKER}")
    if sv_weight is not None and sv_weight.shape[1] != config.sv_dim:
        config = dataclasses.replace(config, sv_dim=int(sv_weight.shape[1]))
    # Built on the meta device: a random init of up to 85 M parameters is pure waste before a
    # load; the loaded tensors are assigned in place of the meta ones.
    with torch.device("meta"):
        model = SoVITSModel(config)
    check_keys(weight, model.official_key_shapes(), path)
    for prefix in weight_norm.marked_prefixes(model):
        g, v = weight.pop(f"{prefix}.weight_g"), weight.pop(f"{prefix}.weight_v")
        weight[f"{prefix}.weight"] = weight_norm.fold(g, v)
    model.load_state_dict(weight, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


@torch.no_grad()
def random_state_dict(config: SoVITSConfig, seed: int) -> dict[str, torch.Tensor]:
    """Official-layout weights of a random model: default torch init, with small noise on every
    tensor that would otherwise be constant (LayerNorm gains, biases), an N(0,1) codebook and
    ``inited`` = 1, so nothing in a round trip can pass by accident."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SoVITSModel(config)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        t = tensor.clone().float()
        if t.numel() > 1 and t.std() == 0:
            t += 0.02 * torch.randn(t.shape, generator=gen)
        state[key] = t
    cb = "quantizer.vq.layers.0._codebook."
    state[cb + "embed"] = torch.randn(state[cb + "embed"].shape, generator=gen)
    state[cb + "embed_avg"] = state[cb + "embed"].clone()
    state[cb + "cluster_size"] = torch.ones_like(state[cb + "cluster_size"])
    state[cb + "inited"] = torch.ones(1)
    for prefix in weight_norm.marked_prefixes(model):
        g, v = weight_norm.unfold(state.pop(f"{prefix}.weight"))
        state[f"{prefix}.weight_g"], state[f"{prefix}.weight_v"] = g, v
    return state


_AUTO = "auto"


def write_random_checkpoint(
    path: str | Path,
    config_dict: dict[str, Any] | None = None,
    seed: int = 0,
    full_size: bool = False,
    header_version: str | None = _AUTO,
    generation: str | None = None,
) -> None:
    """Write a random model in the official container (fp16, no ``enc_q``). Without
    ``config_dict`` the config is ``generation_config(generation or "v2", full_size)``: full size
    gives the official keys (v1/v2 673, Pro 678). The header is what the official trainer writes
    (``05``/``06`` for Pro, none otherwise) unless ``header_version`` names one (None: none)."""
    if config_dict is None:
        config_dict = generation_config(generation or "v2", full_size)
    config_dict = copy.deepcopy(config_dict)
    config = SoVITSConfig.from_dict(config_dict, version=generation)
    if header_version == _AUTO:
        header_version = config.version if config.is_pro else None
    write_container(path, random_state_dict(config, seed), config_dict, "1epoch_1iteration", header_version)
