"""Webhook delivery: a JSON body signed with HMAC-SHA256 over ``"{timestamp}.{body}"``, a delivery
id the receiver can de-duplicate on, retries with exponential backoff and jitter, and a row per
attempt. A dead receiver never changes the job's outcome. The callback URL is checked again
before every attempt and the request goes to the address that was checked (``jobs.callbacks``);
an address that is not allowed fails the delivery at once, without retries.

Headers sent:
    Voxmill-Delivery-Id: <uuid>           (the same on every retry of one delivery)
    Voxmill-Event: job.succeeded | job.failed | job.cancelled
    Voxmill-Timestamp: <unix seconds>
    Voxmill-Signature: v1=<hex hmac_sha256(secret, timestamp + "." + body)>
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from celery import Celery
from sqlalchemy.orm import Session

from db.models import Tenant, utcnow
from jobs import callbacks, lifecycle, metrics
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.lifecycle import DeliveryWork
from jobs.logs import bind_log_context
from jobs.retrying import write_with_retry
from jobs.stages import backoff_seconds, may_take_over

SIGNATURE_VERSION = "v1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: int = 300) -> bool:
    """What a receiver does (and what our tests do): constant-time compare, bounded clock skew."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def request_body(work: DeliveryWork) -> bytes:
    document: dict[str, Any] = {
        "id": str(work.delivery_id),
        "event": work.event,
        "created_at": work.created_at.isoformat(),
        "data": work.payload,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def deliver(task: VoxmillTask, delivery_id: str) -> None:
    runtime = task.runtime
    settings = runtime.settings

    # Held while the attempt is in flight: the HTTP call (connect, write, read), then recording
    # it, which may wait out a database outage.
    lease_s = 3 * settings.webhook_timeout_s + settings.db_retry_deadline_s
    take_over = may_take_over(task)
    tries = 0

    def claim(session: Session) -> tuple[DeliveryWork, str] | None:
        nonlocal tries
        tries += 1
        # A repeat after a lost connection may find its own unseen claim's lease.
        work = lifecycle.claim_delivery(
            session, uuid.UUID(delivery_id), lease_s=lease_s, take_over=take_over or tries > 1
        )
        if work is None:
            return None
        bind_log_context(delivery_id=delivery_id, job_id=work.payload.get("job", {}).get("id"), stage="webhook")
        tenant = session.get(Tenant, work.tenant_id)
        return work, (tenant.webhook_secret if tenant else None) or settings.webhook_secret

    claimed = write_with_retry(runtime, claim, "claim of a webhook delivery")
    if claimed is None:
        return
    work, secret = claimed

    body = request_body(work)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "voxmill-webhooks/1",
        "Voxmill-Delivery-Id": str(work.delivery_id),
        "Voxmill-Event": work.event,
        "Voxmill-Timestamp": str(timestamp),
        "Voxmill-Signature": sign(secret, timestamp, body),
    }
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    refused = False
    try:
        # Checked again now, not only at submission: DNS may answer differently by now.
        target = callbacks.check(work.url, settings)
        response = callbacks.post(target, body, headers, settings.webhook_timeout_s)
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"receiver answered HTTP {status_code}"
    except callbacks.CallbackRejected as exc:
        error = str(exc)
        refused = exc.code != callbacks.UNRESOLVABLE  # a lookup may work later; a bad address will not
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_ms = (time.perf_counter() - started) * 1000
    succeeded = error is None
    metrics.STAGE_SECONDS.labels("webhook").observe(duration_ms / 1000)

    retry_in: float | None = None
    if not succeeded and not refused and work.attempt < settings.webhook_max_attempts:
        retry_in = backoff_seconds(work.attempt, settings.webhook_backoff_base_s, settings.webhook_backoff_max_s)
    retry_at = utcnow() + timedelta(seconds=retry_in) if retry_in is not None else None
    # The receiver has had this attempt: record it even through a database outage, or the
    # sweeper would send the delivery again.
    outcome = write_with_retry(
        runtime,
        lambda session: lifecycle.record_delivery_attempt(
            session,
            work,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            succeeded=succeeded,
            retry_at=retry_at,
        ),
        "record of a webhook attempt",
    )
    if outcome is None:
        return  # another attempt of this delivery already settled it
    if retry_in is not None:
        metrics.TASK_RETRIES.labels(task.name, "webhook_not_delivered").inc()
        if settings.embedded:
            time.sleep(retry_in)  # eager mode has no broker to hold a delayed message
        task.retry(countdown=retry_in, max_retries=None)


def register(app: Celery) -> None:
    @bound_task(app, TaskName.DELIVER_WEBHOOK)
    def deliver_webhook(self: VoxmillTask, delivery_id: str) -> None:
        deliver(self, delivery_id)
