"""Limits on what one caller may ask for: token buckets in Redis (requests per second, characters
of text per minute) per API key — per tenant when auth is off — and a cap on a tenant's unfinished
jobs, counted in the database.

A bucket is a Redis hash (tokens, last refill time) changed by one Lua script, so concurrent API
processes share it without races; the script reads Redis's own clock, so API hosts whose clocks
disagree still agree on the bucket. Several buckets are checked and charged together: a request
refused for its characters spends no request token. A charge larger than a whole bucket (a long
text) is admitted when the bucket is full and leaves it in debt, so the rate holds over time
without making long texts impossible.

Rate limits need Redis: in embedded mode they are off. When Redis cannot answer,
``rate_limit_on_redis_error`` decides: ``open`` (the default) admits the request — the limits
protect the workers, and a broker outage stops the workers anyway — and ``closed`` answers 503
``rate_limits_unavailable``. Either way a warning is logged (at most every 30 s per process) and
``voxmill_rate_limit_store_errors_total{outcome}`` counts every such request."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Job, Tenant
from jobs.settings import Settings
from jobs.states import JOB_TERMINAL, JobStatus
from jobs.tenants import Identity

if TYPE_CHECKING:
    from jobs.runtime import Runtime

log = logging.getLogger("voxmill.limits")

UNFINISHED = tuple(s.value for s in JobStatus if s not in JOB_TERMINAL)

# KEYS: one per bucket. ARGV: per bucket rate (tokens/s), capacity, cost.
# Returns {1, "0"} when every bucket had enough and all were charged, else {0, seconds to wait}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local wait = 0
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local cap = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local h = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local have = tonumber(h[1])
  local ts = tonumber(h[2])
  if have == nil or ts == nil then
    have = cap
    ts = now
  end
  have = math.min(cap, have + math.max(0, now - ts) * rate)
  local need = math.min(cost, cap)
  if have < need then
    wait = math.max(wait, (need - have) / rate)
  end
  tokens[i] = have
end
if wait > 0 then
  return {0, tostring(wait)}
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 2])
  local cap = tonumber(ARGV[3 * i - 1])
  local left = tokens[i] - tonumber(ARGV[3 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(left), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(((cap - left) / rate + 1) * 1000))
end
return {1, '0'}
"""


@dataclass(frozen=True)
class Bucket:
    """One limit: ``capacity`` tokens, refilled at ``rate_per_s``; this request costs ``cost``."""

    name: str
    rate_per_s: float
    capacity: float
    cost: float


def subject(identity: Identity) -> str:
    return f"key:{identity.key_id}" if identity.key_id else f"tenant:{identity.tenant_id}"


def redis_client(settings: Settings) -> Any:
    """A Redis client for the limits: ``redis_url``, else the broker when it is Redis; None when
    there is neither (an AMQP broker without VOXMILL_REDIS_URL) or in embedded mode."""
    url = settings.redis_url or settings.broker_url
    if settings.embedded or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class Limiter:
    """The token buckets of one process (one Redis client, the script loaded once)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = f"{settings.broker_key_prefix}voxmill:rate:"
        self._client: Any = redis_client(settings)  # no connection is made until first use
        self._script: Any = self._client.register_script(_TAKE) if self._client is not None else None
        self._last_warning = 0.0

    @property
    def enabled(self) -> bool:
        return self._script is not None

    def take(self, who: str, buckets: list[Bucket]) -> float:
        """Charge every bucket, or none: 0.0 when admitted, else the seconds until it would be."""
        buckets = [b for b in buckets if b.rate_per_s > 0 and b.capacity > 0 and b.cost > 0]
        if not self.enabled or not buckets:
            return 0.0
        import redis

        keys = [f"{self.prefix}{b.name}:{who}" for b in buckets]
        args: list[float] = []
        for b in buckets:
            args += [b.rate_per_s, b.capacity, b.cost]
        try:
            admitted, wait = self._script(keys=keys, args=args)
        except redis.exceptions.RedisError as exc:
            self._store_error(exc)
            return 0.0
        return 0.0 if int(admitted) == 1 else max(float(wait), 0.001)

    def _store_error(self, exc: Exception) -> None:
        from jobs.metrics import RATE_LIMIT_STORE_ERRORS
        from jobs.submission import RequestRejected

        closed = self.settings.rate_limit_on_redis_error == "closed"
        RATE_LIMIT_STORE_ERRORS.labels("refused" if closed else "admitted").inc()
        now = time.monotonic()
        if now - self._last_warning > 30:
            self._last_warning = now
            log.warning(
                "rate limits unavailable (%s); %s requests (VOXMILL_RATE_LIMIT_ON_REDIS_ERROR=%s)",
                exc,
                "refusing" if closed else "admitting",
                self.settings.rate_limit_on_redis_error,
            )
        if closed:
            raise RequestRejected(
                503, "rate_limits_unavailable", "rate limits cannot be checked right now; retry shortly", retry_after(5)
            )

    def request_buckets(self) -> list[Bucket]:
        s = self.settings
        return [Bucket("req", s.rate_limit_requests_per_s, float(max(1, s.rate_limit_burst)), 1.0)]

    def character_buckets(self, characters: int) -> list[Bucket]:
        per_min = float(self.settings.rate_limit_chars_per_min)
        return [Bucket("chars", per_min / 60.0, per_min, float(characters))]


_limiters: "weakref.WeakKeyDictionary[Runtime, Limiter]" = weakref.WeakKeyDictionary()
_limiters_lock = threading.Lock()


def limiter(runtime: "Runtime") -> Limiter:
    """The process's limiter for this runtime (built on first use, like every resource)."""
    with _limiters_lock:
        found = _limiters.get(runtime)
        if found is None:
            found = _limiters[runtime] = Limiter(runtime.settings)
        return found


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def admit_request(runtime: "Runtime", identity: Identity) -> None:
    """One request against the caller's requests-per-second bucket; 429 when it is empty."""
    from jobs.submission import RequestRejected

    lim = limiter(runtime)
    wait = lim.take(subject(identity), lim.request_buckets())
    if wait:
        raise RequestRejected(
            429,
            "rate_limited",
            f"too many requests: {runtime.settings.rate_limit_requests_per_s:g} per second are allowed",
            retry_after(wait),
        )


def charge_characters(runtime: "Runtime", identity: Identity, characters: int) -> None:
    """Charge submitted text against the caller's characters-per-minute bucket; 429 when it
    does not fit (Retry-After says when it will)."""
    from jobs.submission import RequestRejected

    lim = limiter(runtime)
    wait = lim.take(subject(identity), lim.character_buckets(characters))
    if wait:
        raise RequestRejected(
            429,
            "characters_rate_limited",
            f"{characters} characters exceed what is left of "
            f"{runtime.settings.rate_limit_chars_per_min} characters per minute",
            retry_after(wait),
        )


def admit_job(
    runtime: "Runtime",
    session: Session,
    caller: Identity,
    characters: int,
    callback_url: str | None = None,
) -> None:
    """The one admission every route that queues work passes (``POST /v1/jobs``, the sync routes,
    books, project patches and renders), inside the transaction that writes the job, after the
    request's own checks: the callback URL (422 with its ``callback_url_*`` code), the tenant's
    queued-job cap (429 ``too_many_queued_jobs``; the tenant row stays locked until the commit),
    then the characters against the caller's per-minute bucket (429 ``characters_rate_limited``).
    Charged last, so a request refused for anything else spends no characters."""
    from jobs.submission import RequestRejected

    if callback_url is not None:
        from jobs.callbacks import CallbackRejected, check

        try:
            check(callback_url, runtime.settings)
        except CallbackRejected as exc:
            raise RequestRejected(422, exc.code, exc.message) from None
    check_queued_jobs(session, runtime.settings, caller.tenant_id)
    if characters > 0:
        charge_characters(runtime, caller, characters)


def queued_job_cap(session: Session, settings: Settings, tenant_id: uuid.UUID) -> int:
    tenant = session.get(Tenant, tenant_id)
    if tenant is not None and tenant.max_queued_jobs is not None:
        return tenant.max_queued_jobs
    return settings.max_queued_jobs_per_tenant


def check_queued_jobs(session: Session, settings: Settings, tenant_id: uuid.UUID) -> None:
    """Refuse a new job while the tenant has its cap of unfinished jobs (≤ 0: no cap). The
    tenant row is locked for the rest of the transaction, so two concurrent submissions cannot
    both take the last place (PostgreSQL; SQLite serialises writers anyway)."""
    from jobs.submission import RequestRejected

    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    cap = queued_job_cap(session, settings, tenant_id)
    if cap <= 0:
        return
    unfinished = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.status.in_(UNFINISHED))
    )
    if (unfinished or 0) >= cap:
        raise RequestRejected(
            429,
            "too_many_queued_jobs",
            f"{unfinished} jobs are still unfinished; the limit is {cap}",
            retry_after(settings.queued_jobs_retry_after_s),
        )
