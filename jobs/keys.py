"""Deterministic names: a segment's content key and the storage keys derived from it.
Same input → same key → same stored object, which is what makes redelivery and re-submission
idempotent and lets a finished segment be reused."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

# How text is read aloud (segmentation, reading rules, normalisers in workers/gpt/text). Part of
# every content key, so renders of an older reading are not reused; bump it whenever a change
# there alters what is spoken for some text. 2: segments are exact slices of the source, read
# from the whole sentence.
READING_VERSION = "2"


def content_key(
    normalised_text: str, voice_id: uuid.UUID, model_version: str, params: dict[str, Any]
) -> str:
    material = json.dumps(
        {
            "text": normalised_text,
            "voice": str(voice_id),
            "model": model_version,
            "params": params,
            "reading": READING_VERSION,
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def segment_object_key(tenant_id: uuid.UUID, key: str, name: str) -> str:
    """Objects of one rendered segment, e.g. ``semantic.npz``, ``waveform.wav``, ``audio.wav``."""
    return f"tenants/{tenant_id}/segments/{key[:2]}/{key}/{name}"


def output_object_key(tenant_id: uuid.UUID, key: str, name: str) -> str:
    """A delivered file stored under the content key of everything that feeds it (a book's chapter
    files and whole-book files): every job asking for the same output shares the object."""
    return f"tenants/{tenant_id}/outputs/{key[:2]}/{key}/{name}"


def job_object_key(tenant_id: uuid.UUID, job_id: uuid.UUID, name: str) -> str:
    return f"tenants/{tenant_id}/jobs/{job_id}/{name}"


def voice_object_key(tenant_id: uuid.UUID, voice_id: uuid.UUID, name: str) -> str:
    return f"tenants/{tenant_id}/voices/{voice_id}/{name}"
