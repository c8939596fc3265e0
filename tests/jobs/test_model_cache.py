"""The per-process model LRU (``jobs.model_cache``): keyed by file checksum, bounded by count and
by weight bytes, and a missing or changed file fails with its own code. The stand-in engine
loads a file by reading it, so the files here are plain bytes of chosen sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import PermanentJobError
from jobs.model_cache import ModelEngines
from jobs.models import ModelRef, file_sha256
from jobs.settings import Settings


def model(folder: Path, name: str, size: int) -> ModelRef:
    folder.mkdir(parents=True, exist_ok=True)
    gpt, sovits = folder / f"{name}.ckpt", folder / f"{name}.pth"
    gpt.write_bytes(name.encode() * (size // len(name)))
    sovits.write_bytes(name.encode()[::-1] * (size // len(name)))
    return ModelRef(name, "v2", str(gpt), str(sovits), file_sha256(gpt), file_sha256(sovits))


def engines(tmp_path: Path, **limits: int) -> ModelEngines:
    return ModelEngines(Settings(home=tmp_path, engine="tests.support.engine", **limits))


def test_bounded_by_count_least_recently_used_first(tmp_path: Path) -> None:
    cache = engines(tmp_path, model_cache_max_models=2)
    a, b, c = (model(tmp_path, n, 1000) for n in ("a", "b", "c"))
    first = cache.semantic(a)
    cache.semantic(b)
    assert cache.semantic(a) is first  # a hit, and a is now the most recent
    cache.semantic(c)  # evicts b, the least recently used
    assert cache.loaded == [("gpt", a.gpt_sha256), ("gpt", c.gpt_sha256)]
    assert cache.semantic(a) is first


def test_bounded_by_weight_bytes(tmp_path: Path) -> None:
    cache = engines(tmp_path, model_cache_max_models=10, model_cache_max_bytes=2500)
    a, b, c = (model(tmp_path, n, 1000) for n in ("a", "b", "c"))
    for ref in (a, b, c):
        cache.acoustic(ref)
    assert cache.loaded == [("sovits", b.sovits_sha256), ("sovits", c.sovits_sha256)]
    assert cache.resident_bytes <= 2500
    # One model larger than the bound still loads (alone): a job must be able to run.
    big = model(tmp_path, "big", 5000)
    cache.acoustic(big)
    assert cache.loaded == [("sovits", big.sovits_sha256)]


def test_two_models_keep_their_own_engines(tmp_path: Path) -> None:
    cache = engines(tmp_path)
    a, b = model(tmp_path, "a", 1000), model(tmp_path, "b", 1000)
    assert cache.acoustic(a) is not cache.acoustic(b)
    assert cache.voice_encoder(a).model_version == a.version


def test_missing_and_changed_files_fail_with_their_codes(tmp_path: Path) -> None:
    cache = engines(tmp_path)
    gone, changed = model(tmp_path, "gone", 1000), model(tmp_path, "changed", 1000)
    Path(gone.sovits_path).unlink()
    with pytest.raises(PermanentJobError) as missing:
        cache.acoustic(gone)
    assert missing.value.code == "model_missing" and gone.sovits_path in missing.value.message
    Path(changed.gpt_path).write_bytes(b"overwritten")
    with pytest.raises(PermanentJobError) as corrupt:
        cache.semantic(changed)
    assert corrupt.value.code == "model_corrupt"
    assert cache.loaded == []
    cache.semantic(model(tmp_path, "fine", 1000))  # the process goes on
