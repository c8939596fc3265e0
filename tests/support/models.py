"""Registered models for tests: tiny GPT + SoVITS pairs in the official formats, written at test
time (never committed), and registration through ``jobs.models`` as ``voxmill models add`` does."""

from __future__ import annotations

import uuid
from pathlib import Path

from db.models import Model
from jobs.models import add_model
from jobs.runtime import Runtime
from workers.assets import TINY_T2S_CONFIG


def write_pair(folder: Path, seed: int) -> tuple[Path, Path]:
    """A tiny official-format pair (the parity set's sizes); another seed, other weights."""
    from workers.gpt.model import write_random_checkpoint as write_t2s
    from workers.sovits.model import v2_config, write_random_checkpoint as write_sovits

    folder.mkdir(parents=True, exist_ok=True)
    gpt, sovits = folder / "gpt.ckpt", folder / "sovits.pth"
    write_t2s(gpt, TINY_T2S_CONFIG, seed=seed)
    write_sovits(sovits, v2_config(full_size=False), seed=seed)
    return gpt, sovits


def register(
    runtime: Runtime, name: str, gpt: Path, sovits: Path, tenant_id: uuid.UUID | None = None
) -> Model:
    with runtime.transaction() as session:
        model = add_model(session, runtime.settings, name, gpt, sovits, tenant_id)
        session.flush()
        session.expunge(model)
        return model
