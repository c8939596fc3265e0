"""Reading a voice's stored features for a stage, with a small per-process cache: features are
immutable once a voice is ready (a changed voice is a new features object), so the cache is
keyed by storage key and never needs invalidating."""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock

from jobs import metrics
from jobs.engine import VoiceFeatures
from jobs.errors import PermanentJobError, RetryLater
from jobs.lifecycle import StageClaim
from jobs.runtime import Runtime
from jobs.states import VoiceStatus

_CACHE_SIZE = 64
_cache: OrderedDict[str, VoiceFeatures] = OrderedDict()
_lock = Lock()


def voice_features(runtime: Runtime, claim: StageClaim) -> VoiceFeatures:
    status = VoiceStatus(claim.voice_status)
    if status in (VoiceStatus.PENDING, VoiceStatus.PROCESSING):
        raise RetryLater("the voice is still being processed", code="voice_not_ready")
    if status is not VoiceStatus.READY:
        raise PermanentJobError(f"the voice is {status.value}", code="voice_unavailable")
    if claim.voice_features_key is None:
        what = f"for model {claim.model.name}" if claim.model is not None else "stored"
        raise PermanentJobError(f"the voice has no features {what}", code="voice_unavailable")
    key = claim.voice_features_key
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            metrics.cache_hit("voice_features")
            return _cache[key]
    metrics.cache_miss("voice_features")
    features = VoiceFeatures.from_bytes(runtime.storage.get(key))
    with _lock:
        _cache[key] = features
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return features
