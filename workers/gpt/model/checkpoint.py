"""Official GPT (T2S) ``*.ckpt`` files: strict loading into ``Text2SemanticModel`` and writing
random ones for tests and benchmarks.

Format facts (RVC-Boss/GPT-SoVITS ``s1_train.py`` saver and inference loader):

* A plain ``torch.save`` zip: ``{"weight": state_dict, "config": dict, "info": "GPT-e{epoch}"}``.
* ``weight`` is the Lightning module's state dict: every key prefixed ``model.``, every tensor
  fp16, no buffers (the sine table is not saved). v2: 295 keys, 77,606,402 parameters.
* Inference reads ``config["model"]`` (vocab_size 1025, phoneme_vocab_size 732 in v2 / 512 in
  v1, embedding_dim = hidden_dim 512, head 16, n_layer 24, EOS 1024; ``linear_units`` is ignored,
  the feed-forward width is 4 * hidden_dim) and ``config["data"]["max_sec"]`` (54).
* The official loader is ``load_state_dict(weight)`` with strict=True; so is ours, with an error
  that names the offending keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers.checkpoints import CheckpointError, read_container, write_container

from .config import T2SConfig
from .t2s import Text2SemanticModel

PREFIX = "model."
_MAX_LISTED = 8


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def check_weights(
    expected: dict[str, torch.Size], weight: dict[str, torch.Tensor], source: str
) -> None:
    """Raise ``CheckpointError`` unless ``weight`` has exactly the expected keys and shapes."""
    missing = sorted(set(expected) - set(weight))
    unexpected = sorted(set(weight) - set(expected))
    wrong = sorted(
        f"{k} {tuple(weight[k].shape)} != {tuple(expected[k])}"
        for k in set(expected) & set(weight)
        if weight[k].shape != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_listed(wrong)}")
    if problems:
        raise CheckpointError(f"{source}: not a T2S checkpoint of its config; " + "; ".join(problems))


def load_t2s(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Text2SemanticModel:
    """See ``Text2SemanticModel.load``."""
    container = read_container(path)
    try:
        config = T2SConfig.from_dict(container.config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad T2S config ({exc})") from exc
    outside = [k for k in container.weight if not k.startswith(PREFIX)]
    if outside:
        raise CheckpointError(
            f"{path}: keys without the '{PREFIX}' prefix ({_listed(outside)}); not a GPT-SoVITS "
            "T2S checkpoint"
        )
    weight = {k[len(PREFIX) :]: v for k, v in container.weight.items()}
    # Built on the meta device: the random init of 77 M parameters is pure waste before a load.
    with torch.device("meta"):
        model = Text2SemanticModel(config)
    check_weights({k: v.shape for k, v in model.state_dict().items()}, weight, str(path))
    model = model.to_empty(device=device).to(dtype)
    model.load_state_dict(weight, strict=True)
    model.requires_grad_(False)
    return model.eval()


def random_weights(config: T2SConfig, seed: int) -> dict[str, torch.Tensor]:
    """A reproducible random state dict (unprefixed keys). No parameter is left constant, so a
    test can tell a bias or norm that is skipped from one that is used."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Text2SemanticModel(config).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=generator)
        if key.endswith("word_embeddings.weight"):
            out[key] = noise
        elif len(shape) == 2:  # projection [out, in]: keep activations near unit scale
            out[key] = noise / shape[1] ** 0.5
        elif key.endswith("alpha") or (".norm" in key and key.endswith("weight")):
            out[key] = 1.0 + 0.02 * noise
        else:  # biases
            out[key] = 0.02 * noise
    return out


def reachable_eos(weight: dict[str, torch.Tensor], config: T2SConfig, eos_logit: float) -> dict[str, torch.Tensor]:
    """Random weights whose EOS logit is the constant ``eos_logit`` at every step, so sampling
    stops by itself after a geometric number of tokens, as a trained model does (random weights
    otherwise give EOS a logit like any token's and almost never sample it: every render runs to
    the runaway guard). How: the last block's output norm pins hidden channel 0 to 1 (gain 0,
    bias 1); no token reads channel 0 except EOS, which reads only it, with weight ``eos_logit``.
    The model stays an ordinary official-format T2S model; generation and decoding are unchanged."""
    out = dict(weight)
    last = f"h.layers.{config.num_layers - 1}.norm2"
    gain, bias = out[f"{last}.weight"].clone(), out[f"{last}.bias"].clone()
    gain[0], bias[0] = 0.0, 1.0
    predict = out["ar_predict_layer.weight"].clone()  # [vocab, hidden]
    predict[:, 0] = 0.0
    predict[config.eos] = 0.0
    predict[config.eos, 0] = eos_logit
    out[f"{last}.weight"], out[f"{last}.bias"], out["ar_predict_layer.weight"] = gain, bias, predict
    return out


def write_random_checkpoint(
    path: str | Path, config: dict[str, Any] | T2SConfig | None = None, seed: int = 0, eos_logit: float | None = None
) -> T2SConfig:
    """Write a random model in the official container (fp16, ``model.`` prefix, the config dict,
    info "GPT-e1"). ``config`` is an official-style dict (written as given) or a ``T2SConfig``;
    None means the full-size v2 model. ``eos_logit``: make EOS reachable (``reachable_eos``).
    Returns the parsed config."""
    if config is None:
        config = T2SConfig()
    config_dict = config.to_dict() if isinstance(config, T2SConfig) else config
    parsed = T2SConfig.from_dict(config_dict)
    weights = random_weights(parsed, seed)
    if eos_logit is not None:
        weights = reachable_eos(weights, parsed, eos_logit)
    weight = {PREFIX + k: v for k, v in weights.items()}
    write_container(path, weight, config_dict, "GPT-e1")
    return parsed


def random_model(
    config: T2SConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Text2SemanticModel:
    """The model ``write_random_checkpoint`` would write, without the file (fp16-rounded weights,
    as a load would give)."""
    config = config or T2SConfig()
    with torch.device("meta"):
        model = Text2SemanticModel(config)
    model = model.to_empty(device=device).to(dtype)
    weight = {k: v.half() for k, v in random_weights(config, seed).items()}
    model.load_state_dict(weight, strict=True)
    model.requires_grad_(False)
    return model.eval()
