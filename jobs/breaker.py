"""The circuit breaker in front of synchronous synthesis. A sync request holds a connection until
its audio exists, so when the sovits pool cannot keep up — its queue is deep, or its recent
attempts keep failing — sync requests are refused at once (503 + Retry-After) instead of piling
up, while async jobs are still accepted and simply wait in the queue.

What it reads:
- the sovits queue's ready messages, from the broker itself (Redis list length or AMQP count);
- the outcome of recent sovits attempts, from ``state_transitions`` (PostgreSQL): within
  ``breaker_window_s``, segments leaving ``sovits_running`` for ``sovits_done`` succeeded, those
  leaving it for ``failed`` or re-entering it (a retry or a dead worker's redelivery) did not.

Once tripped, the breaker stays open for ``breaker_cooldown_s``: the open state is a Redis key
with that TTL, so every API process agrees and the answer does not flap. While closed, each
process re-measures at most every ``breaker_check_interval_s``. Embedded mode has no broker and
no breaker."""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from db.models import StateTransition, utcnow
from jobs.states import SegmentStatus

if TYPE_CHECKING:
    from jobs.runtime import Runtime

log = logging.getLogger("voxmill.breaker")

QUEUE = "sovits"


@dataclass(frozen=True)
class Health:
    """One measurement of the sovits pool."""

    queue_depth: int | None  # None: the broker could not be asked
    succeeded: int
    failed: int

    @property
    def error_rate(self) -> float:
        total = self.succeeded + self.failed
        return self.failed / total if total else 0.0


@dataclass(frozen=True)
class BreakerState:
    open: bool
    reason: str | None = None
    retry_after_s: int = 0


CLOSED = BreakerState(open=False)


def queue_depth(runtime: "Runtime", queue: str = QUEUE) -> int:
    """Ready messages in ``queue``, from the broker. On Redis (a kombu virtual transport) this is
    the channel's own size, summed over priority lists: kombu's passive queue_declare there
    answers 'not found' for an empty queue (no key) and, with a global key prefix, for a full one
    too (its existence check ignores the prefix). AMQP brokers answer the passive declare."""
    from amqp.exceptions import ChannelError

    with runtime.celery.pool.acquire(block=True, timeout=2) as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        channel = connection.default_channel
        size = getattr(channel, "_size", None)
        if callable(size):
            return int(size(queue))
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError as exc:
            if str(getattr(exc, "reply_code", "")) == "404":
                return 0
            raise


def sovits_outcomes(runtime: "Runtime", window_s: float) -> tuple[int, int]:
    """(succeeded, failed or retried) sovits attempts that ended within the last ``window_s``."""
    since = utcnow() - timedelta(seconds=window_s)
    running = SegmentStatus.SOVITS_RUNNING.value
    with runtime.transaction() as session:
        rows = session.execute(
            select(StateTransition.to_status, func.count())
            .where(
                StateTransition.entity == "segment",
                StateTransition.from_status == running,
                StateTransition.created_at >= since,
            )
            .group_by(StateTransition.to_status)
        ).all()
    counts = {status: int(n) for status, n in rows}
    succeeded = counts.get(SegmentStatus.SOVITS_DONE.value, 0)
    failed = counts.get(SegmentStatus.FAILED.value, 0) + counts.get(running, 0)
    return succeeded, failed


class Breaker:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.key = f"{self.settings.broker_key_prefix}voxmill:breaker:{QUEUE}"
        self._lock = threading.Lock()
        self._checked_at = -math.inf
        self._client: Any = None
        # Without Redis (an AMQP broker and no VOXMILL_REDIS_URL) the open state is this
        # process's own: (monotonic deadline, reason).
        self._local: tuple[float, str] | None = None

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                from jobs.limits import redis_client

                self._client = redis_client(self.settings)
            return self._client

    def measure(self) -> Health:
        depth: int | None
        try:
            depth = queue_depth(self.runtime)
        except Exception as exc:  # the broker is down: no sync request could be served either
            log.warning("breaker: cannot read the %s queue: %s", QUEUE, exc)
            depth = None
        succeeded, failed = sovits_outcomes(self.runtime, self.settings.breaker_window_s)
        return Health(depth, succeeded, failed)

    def verdict(self, health: Health) -> str | None:
        """Why the breaker should open for this measurement, or None."""
        s = self.settings
        if health.queue_depth is None:
            return "the broker cannot be reached"
        if s.breaker_max_queue_depth > 0 and health.queue_depth > s.breaker_max_queue_depth:
            return f"the {QUEUE} queue holds {health.queue_depth} messages (limit {s.breaker_max_queue_depth})"
        samples = health.succeeded + health.failed
        if samples >= max(1, s.breaker_min_samples) and health.error_rate > s.breaker_max_error_rate:
            return (
                f"{health.error_rate:.0%} of the last {samples} {QUEUE} attempts failed "
                f"(limit {s.breaker_max_error_rate:.0%})"
            )
        return None

    def trip(self, reason: str) -> BreakerState:
        cooldown_s = max(0.001, self.settings.breaker_cooldown_s)
        log.warning("breaker open for %.0f s: %s", cooldown_s, reason)
        client = self._redis()
        if client is None:
            self._local = (time.monotonic() + cooldown_s, reason)
        else:
            client.set(self.key, reason.encode("utf-8"), px=int(cooldown_s * 1000), nx=True)
        return self._open_state(client) or BreakerState(True, reason, math.ceil(cooldown_s))

    def _open_state(self, client: Any) -> BreakerState | None:
        if client is None:
            if self._local is None or self._local[0] <= time.monotonic():
                return None
            return BreakerState(True, self._local[1], max(1, math.ceil(self._local[0] - time.monotonic())))
        with client.pipeline() as pipe:
            reason, ttl_ms = pipe.get(self.key).pttl(self.key).execute()
        if reason is None:
            return None
        return BreakerState(True, reason.decode("utf-8", "replace"), max(1, math.ceil(max(ttl_ms, 0) / 1000)))

    def reset(self) -> None:
        """Close the breaker now (operators; tests)."""
        client = self._redis()
        if client is not None:
            client.delete(self.key)
        self._local = None
        self._checked_at = -math.inf

    def state(self) -> BreakerState:
        """Open or closed, for a sync request arriving now."""
        if self.settings.embedded:
            return CLOSED
        import redis

        try:
            client = self._redis()
            opened = self._open_state(client)
            if opened is not None:
                return opened
            now = time.monotonic()
            if now - self._checked_at < self.settings.breaker_check_interval_s:
                return CLOSED
            self._checked_at = now
            reason = self.verdict(self.measure())
            return self.trip(reason) if reason else CLOSED
        except redis.exceptions.RedisError as exc:
            # Redis is the broker: without it a sync request cannot be queued at all.
            return BreakerState(True, f"the broker cannot be reached ({type(exc).__name__})", 5)


_breakers: "weakref.WeakKeyDictionary[Runtime, Breaker]" = weakref.WeakKeyDictionary()
_breakers_lock = threading.Lock()


def breaker(runtime: "Runtime") -> Breaker:
    with _breakers_lock:
        found = _breakers.get(runtime)
        if found is None:
            found = _breakers[runtime] = Breaker(runtime)
        return found
