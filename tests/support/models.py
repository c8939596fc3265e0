"""Registered models for tests: tiny GPT + SoVITS pairs in the official formats, written at test
time (never committed), and registration through ``jobs.models`` as ``voxmill models add`` does."""

from __future__ import annotations

import uuid
from pathlib import Path

from db.models import Model
from jobs.models import add_model
from jobs.runtime import Runtime
from workers.assets import TINY_EOS_LOGIT, tiny_t2s_config


def write_pair(folder: Path, seed: int, generation: str = "v2") -> tuple[Path, Path]:
    """A tiny official-format pair of a generation (the parity set's sizes; for v2Pro/v2ProPlus,
    ``sv_emb`` as wide as the small SV model ``make_tiny`` writes); another seed, other weights.
    The T2S reaches EOS as ``make_tiny``'s does, so renders stop by themselves."""
    from workers.gpt.model import write_random_checkpoint as write_t2s
    from workers.sovits.model import generation_config, write_random_checkpoint as write_sovits
    from workers.sovits.model.config import PRO_GENERATIONS
    from workers.sovits.model.sv import SMALL_SV_CONFIG

    folder.mkdir(parents=True, exist_ok=True)
    gpt, sovits = folder / "gpt.ckpt", folder / "sovits.pth"
    write_t2s(gpt, tiny_t2s_config(generation), seed=seed, eos_logit=TINY_EOS_LOGIT)
    config = generation_config(generation, full_size=False)
    if generation in PRO_GENERATIONS:
        config["model"]["sv_dim"] = SMALL_SV_CONFIG.embedding_dim
    write_sovits(sovits, config, seed=seed, generation=generation)
    return gpt, sovits


def register(
    runtime: Runtime, name: str, gpt: Path, sovits: Path, tenant_id: uuid.UUID | None = None
) -> Model:
    with runtime.transaction() as session:
        model = add_model(session, runtime.settings, name, gpt, sovits, tenant_id)
        session.flush()
        session.expunge(model)
        return model
