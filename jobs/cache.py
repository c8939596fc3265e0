"""The render cache: a finished segment is found again by its content key, which already is
sha256(normalised text, voice, model version, synthesis params) — exactly the cache key.

- L1: an in-process LRU for hot short phrases (at most ``cache_l1_max_chars``): the entry and,
  once asked for, the audio bytes. Per process, never shared, bounded by entries and bytes.
- L2: the ``render_cache`` table, one row per (tenant, content key) pointing at the stored,
  verified audio object, shared by every job of the tenant. Written when a segment's post stage
  completes (``jobs.lifecycle.complete_stage``); read at planning, where a hit makes the segment
  finished without enqueueing anything (``jobs.lifecycle.start_job``). A hit is verified: the
  object must still exist in storage, else it counts as ``stale`` and the segment is rendered.

A render carries its quality verdict, scores and T2S stop reason: a reused segment gets them too,
so a render below the gate stays reported as such however often it is reused. A render the gate
could not score (verdict ``unscored``) is not reused while the gate is ``enforce``d: it counts as
``unscored`` and the segment is rendered (and scored) again.

Look-ups are counted in ``voxmill_cache_requests_total{cache="render_l1"|"render_l2", result}``
(``jobs.metrics``), result ``hit``, ``miss``, ``stale`` or ``unscored``.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import RenderCacheEntry, utcnow
from jobs import metrics
from jobs.storage import StoredObject

if TYPE_CHECKING:
    from jobs.quality import RenderQuality
    from jobs.runtime import Runtime
    from jobs.settings import Settings

_IN_CHUNK = 500  # keys per IN (...) query


@dataclass(frozen=True)
class CachedRender:
    """A finished render of one content key: its stored audio and what verifies it."""

    content_key: str
    audio_key: str
    size_bytes: int
    sha256: str
    content_type: str
    duration_s: float | None
    # The quality gate's verdict and scores of this render (None: not scored) and how its T2S
    # generation stopped (None: not known).
    quality_verdict: str | None = None
    quality_scores: dict[str, Any] | None = None
    stop_reason: str | None = None

    def stored(self) -> StoredObject:
        return StoredObject(self.audio_key, self.size_bytes, self.sha256, self.content_type)

    @property
    def quality_passed(self) -> bool | None:
        return None if self.quality_verdict is None else self.quality_verdict == "passed"

    @classmethod
    def from_row(cls, row: RenderCacheEntry) -> "CachedRender":
        return cls(
            row.content_key,
            row.audio_key,
            row.size_bytes,
            row.sha256,
            row.content_type,
            row.duration_s,
            row.quality_verdict,
            dict(row.quality_scores) if row.quality_scores is not None else None,
            row.stop_reason,
        )


class L1Cache:
    """Thread-safe LRU of (tenant, content key) → render (and its audio bytes once read)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[uuid.UUID, str], tuple[CachedRender, bytes | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, tenant_id: uuid.UUID, key: str) -> tuple[CachedRender, bytes | None] | None:
        with self._lock:
            item = self._items.get((tenant_id, key))
            if item is not None:
                self._items.move_to_end((tenant_id, key))
            return item

    def put(self, tenant_id: uuid.UUID, render: CachedRender, audio: bytes | None = None) -> None:
        if self.max_entries <= 0 or (audio is not None and len(audio) > self.max_bytes):
            return
        with self._lock:
            old = self._items.pop((tenant_id, render.content_key), None)
            if old is not None:
                self._bytes -= len(old[1] or b"")
                audio = audio if audio is not None else old[1]
            self._items[(tenant_id, render.content_key)] = (render, audio)
            self._bytes += len(audio or b"")
            while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= len(dropped or b"")

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


_l1: L1Cache | None = None
_l1_lock = threading.Lock()


def l1(settings: "Settings") -> L1Cache:
    """The process's L1, sized from the first settings that ask for it."""
    global _l1
    with _l1_lock:
        if _l1 is None:
            _l1 = L1Cache(settings.cache_l1_entries, settings.cache_l1_max_bytes)
        return _l1


def lookup_many(
    runtime: "Runtime", session: Session, tenant_id: uuid.UUID, wanted: Iterable[tuple[str, int]]
) -> dict[str, CachedRender]:
    """Finished renders for ``(content key, text length)`` pairs: L1 for short phrases, then one
    L2 query per chunk of keys, each hit verified in storage. Misses are absent from the result."""
    settings = runtime.settings
    cache = l1(settings)
    found: dict[str, CachedRender] = {}
    short: set[str] = set()
    remaining: list[str] = []
    for key, chars in dict(wanted).items():
        if chars <= settings.cache_l1_max_chars:
            short.add(key)
            item = cache.get(tenant_id, key)
            if item is not None and _held_back(settings, item[0]):
                metrics.cache_result("render_l1", "unscored")
            else:
                metrics.cache_result("render_l1", "hit" if item else "miss")
                if item is not None:
                    found[key] = item[0]
                    continue
        remaining.append(key)
    for start in range(0, len(remaining), _IN_CHUNK):
        chunk = remaining[start : start + _IN_CHUNK]
        rows = {
            row.content_key: row
            for row in session.scalars(
                select(RenderCacheEntry).where(
                    RenderCacheEntry.tenant_id == tenant_id, RenderCacheEntry.content_key.in_(chunk)
                )
            )
        }
        for key in chunk:
            row = rows.get(key)
            if row is None:
                metrics.cache_result("render_l2", "miss")
                continue
            if not runtime.storage.exists(row.audio_key):
                metrics.cache_result("render_l2", "stale")
                continue
            render = CachedRender.from_row(row)
            if _held_back(settings, render):
                metrics.cache_result("render_l2", "unscored")
                continue
            metrics.cache_result("render_l2", "hit")
            found[key] = render
            if key in short:
                cache.put(tenant_id, render)
    return found


def _held_back(settings: "Settings", render: CachedRender) -> bool:
    """An unscored render is no pass: with the gate enforced it is rendered and scored again."""
    return settings.quality_gate == "enforce" and render.quality_verdict == "unscored"


def lookup(
    runtime: "Runtime", session: Session, tenant_id: uuid.UUID, content_key: str, text_chars: int
) -> CachedRender | None:
    return lookup_many(runtime, session, tenant_id, [(content_key, text_chars)]).get(content_key)


def get_audio(runtime: "Runtime", tenant_id: uuid.UUID, content_key: str, text_chars: int) -> bytes | None:
    """The finished audio of a content key, or None: for short texts served straight from a
    process (L1 keeps the bytes of short phrases)."""
    cache = l1(runtime.settings)
    short = text_chars <= runtime.settings.cache_l1_max_chars
    if short:
        item = cache.get(tenant_id, content_key)
        if item is not None and item[1] is not None:
            metrics.cache_result("render_l1", "hit")
            return item[1]
    with runtime.transaction() as session:
        render = lookup(runtime, session, tenant_id, content_key, text_chars)
    if render is None:
        return None
    data = runtime.storage.get(render.audio_key)
    if short:
        cache.put(tenant_id, render, data)
    return data


def record(
    session: Session,
    tenant_id: uuid.UUID,
    content_key: str,
    audio: StoredObject,
    duration_s: float | None,
    quality: "RenderQuality | None" = None,
    stop_reason: str | None = None,
) -> None:
    """Insert or refresh the L2 row of a just-finished render (same transaction as the stage's
    completion, so a row never names audio that was not recorded as finished), with its verdict,
    scores and stop reason."""
    values: dict[str, Any] = {
        "audio_key": audio.key,
        "size_bytes": audio.size_bytes,
        "sha256": audio.sha256,
        "content_type": audio.content_type,
        "duration_s": duration_s,
        "quality_verdict": quality.verdict if quality is not None else None,
        "quality_scores": quality.as_dict() if quality is not None else None,
        "stop_reason": stop_reason,
        "last_used_at": utcnow(),
    }
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(RenderCacheEntry).values(
            id=uuid.uuid4(), tenant_id=tenant_id, content_key=content_key, hits=0, created_at=utcnow(), **values
        )
        session.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "content_key"], set_=values))
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(RenderCacheEntry).values(
            id=uuid.uuid4(), tenant_id=tenant_id, content_key=content_key, hits=0, created_at=utcnow(), **values
        )
        session.execute(lite.on_conflict_do_update(index_elements=["tenant_id", "content_key"], set_=values))


def mark_used(session: Session, tenant_id: uuid.UUID, keys: list[str]) -> None:
    """Count reuses (for eviction and for people reading the table)."""
    for start in range(0, len(keys), _IN_CHUNK):
        session.execute(
            update(RenderCacheEntry)
            .where(RenderCacheEntry.tenant_id == tenant_id, RenderCacheEntry.content_key.in_(keys[start : start + _IN_CHUNK]))
            .values(hits=RenderCacheEntry.hits + 1, last_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )
