"""Registered models loaded on demand in a worker process: an LRU of engines keyed by the sha256
of the file each one holds (the gpt pool keeps T2S weights, the sovits pool SoVITS weights),
bounded by count (``model_cache_max_models``) and by resident weight bytes
(``model_cache_max_bytes``). Jobs on different models run side by side in the same pool: each
finds its own engine, nothing is swapped globally.

A file is checked before it is loaded: absent → ``model_missing``, a sha256 other than the one
registered (truncated, overwritten) or a file the loader refuses → ``model_corrupt``. Both are
``PermanentJobError``s: the job fails with that code, the worker goes on."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobs import metrics
from jobs.engine import (
    AcousticEngine,
    SemanticEngine,
    VoiceEncoder,
    create_acoustic_engine_for,
    create_semantic_engine_for,
    create_voice_encoder_for,
)
from jobs.errors import PermanentJobError, RetryLater
from jobs.models import ModelRef, file_sha256
from jobs.settings import Settings

log = logging.getLogger("voxmill.models")
T = TypeVar("T")


@dataclass
class _Entry:
    engine: Any
    weight_bytes: int


def checked_file(ref: ModelRef, half: str) -> Path:
    """The model's ``half`` ("gpt" or "sovits") file, verified against its registered sha256."""
    path = Path(ref.gpt_path if half == "gpt" else ref.sovits_path)
    expected = ref.gpt_sha256 if half == "gpt" else ref.sovits_sha256
    if not path.is_file():
        raise PermanentJobError(f"model {ref.name}: the {half} file {path} is missing", code="model_missing")
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise PermanentJobError(f"model {ref.name}: cannot read {path}: {exc}", code="model_missing") from exc
    if actual != expected:
        raise PermanentJobError(
            f"model {ref.name}: {path} has sha256 {actual[:12]}…, registered as {expected[:12]}…; "
            "the file changed or is damaged",
            code="model_corrupt",
        )
    return path


def weight_bytes(engine: object, path: Path) -> int:
    """What an engine holds in memory: its own count when it gives one, else the file size."""
    counted = getattr(engine, "weight_bytes", None)
    return int(counted) if isinstance(counted, int) else path.stat().st_size


class ModelEngines:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    @property
    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._entries)

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(e.weight_bytes for e in self._entries.values())

    def _get(self, key: tuple[str, str], ref: ModelRef, half: str, build: Callable[[Path], T]) -> T:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                metrics.cache_hit("model")
                result: T = entry.engine
                return result
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per file at a time; other models' jobs are not held up
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    found: T = entry.engine
                    return found
            metrics.cache_miss("model")
            path = checked_file(ref, half)
            try:
                engine = build(path)
            except (PermanentJobError, RetryLater):
                raise
            except Exception as exc:  # the loader refused the file: damaged, or not this format
                raise PermanentJobError(
                    f"model {ref.name}: cannot load the {half} file {path}: {exc}", code="model_corrupt"
                ) from exc
            size = weight_bytes(engine, path)
            with self._lock:
                self._entries[key] = _Entry(engine, size)
                self._evict()
            log.info("loaded model %s (%s, %d bytes)", ref.name, half, size)
            return engine

    def _evict(self) -> None:
        limit_n, limit_b = self.settings.model_cache_max_models, self.settings.model_cache_max_bytes
        while len(self._entries) > 1 and (
            len(self._entries) > limit_n or sum(e.weight_bytes for e in self._entries.values()) > limit_b
        ):
            key, _ = self._entries.popitem(last=False)
            log.info("unloaded model file %s (%s): least recently used", key[1][:12], key[0])

    def semantic(self, ref: ModelRef) -> SemanticEngine:
        return self._get(
            ("gpt", ref.gpt_sha256),
            ref,
            "gpt",
            lambda path: create_semantic_engine_for(self.settings, path, ref.version),
        )

    def acoustic(self, ref: ModelRef) -> AcousticEngine:
        return self._get(
            ("sovits", ref.sovits_sha256),
            ref,
            "sovits",
            lambda path: create_acoustic_engine_for(self.settings, path, ref.version),
        )

    def voice_encoder(self, ref: ModelRef) -> VoiceEncoder:
        """Shares the acoustic engine's loaded SoVITS weights (one copy per file)."""
        return create_voice_encoder_for(self.settings, self.acoustic(ref))
