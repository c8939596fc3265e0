"""The GPT-SoVITS T2S ("GPT") model: phones + BERT features (+ prompt semantic tokens) →
semantic tokens. One architecture for every generation: v1 files have a 512-row phone embedding
(ids from the 322-symbol v1 table; ``T2SConfig.phone_table == "v1"``), v2 files and the s1v3
that v2Pro/v2ProPlus pair with have 732 rows. Our own inference implementation of the official ``Text2SemanticDecoder``;
imports torch only (plus ``workers.checkpoints`` for the container format).

Public API:
    T2SConfig.from_dict(ckpt_config) -> T2SConfig         # config["model"], config["data"]["max_sec"]
    T2SConfig.for_generation("v1" | "v2" | "v2Pro" | "v2ProPlus") -> T2SConfig   # official shape
    Text2SemanticModel(config)                            # state_dict keys = official keys minus "model."
    Text2SemanticModel.load(path, device="cpu", dtype=torch.float32) -> Text2SemanticModel
    SamplingParams(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35,
                   early_stop_num=None, max_steps=1500)
    T2SRequest(phones [p], bert [1024, p], prompt [t_p] | None, seed=0, params=SamplingParams())
    generate(model, requests, use_cache=True) -> list[T2SResult]   # batched; each stops alone
    T2SResult.tokens / .stop_reason / .official_idx / .webui_tokens
    write_random_checkpoint(path, config=None, seed=0) -> T2SConfig  # official container, fp16
    random_model(config=None, seed=0, device="cpu", dtype=torch.float32) -> Text2SemanticModel
    onnx_step.export_decode_step(model, path, opset=18, dynamo=False)  # one KV-cache step as ONNX

Decoding semantics (masks, sampler order, stop rules, the webui ``idx`` quirk) are documented in
``generate.py`` and ``sampling.py``; checkpoint facts in ``checkpoint.py``.
"""

from .checkpoint import random_model, write_random_checkpoint
from .config import T2SConfig
from .generate import T2SRequest, T2SResult, generate
from .sampling import SamplingParams
from .t2s import Text2SemanticModel

__all__ = [
    "SamplingParams",
    "T2SConfig",
    "T2SRequest",
    "T2SResult",
    "Text2SemanticModel",
    "generate",
    "random_model",
    "write_random_checkpoint",
]
