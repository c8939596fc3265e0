"""How a stage task runs: claim the segment, do the work with no transaction open, record the
result — and what happens when the work fails. Workers supply only the work function.

Failures split two ways. ``RetryLater`` and the transient errors below are retried with
exponential backoff and jitter until the segment's attempt count (kept in the database, so it
survives redelivery) reaches the cap; everything else is a permanent failure of the segment,
never retried: a deterministic error retried only fills the GPU queue.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Segment
from jobs import lifecycle, metrics
from jobs.celery_app import VoxmillTask
from jobs.errors import JobError, PermanentJobError, RetryLater
from jobs.lifecycle import ClaimRefused, StageClaim, StageOutput
from jobs.logs import bind_log_context
from jobs.retrying import write_with_retry
from jobs.runtime import Runtime
from jobs.states import SegmentStatus, Stage

log = logging.getLogger("voxmill.stages")

StageWork = Callable[[Runtime, StageClaim], StageOutput]


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: lost connections, timeouts, a full GPU."""
    if isinstance(exc, (RetryLater, SoftTimeLimitExceeded, ConnectionError, TimeoutError)):
        return True
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        return True
    import redis.exceptions

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError, without torch


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, so retries spread out."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return float(delay / 2 + random.uniform(0, delay / 2))


def error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, JobError) else "internal_error"


def retry_task(task: VoxmillTask, exc: BaseException, attempt: int) -> Any:
    """Ask Celery to run the task again later; the chain it belongs to is kept."""
    settings = task.runtime.settings
    countdown = backoff_seconds(attempt, settings.task_retry_backoff_s, settings.task_retry_backoff_max_s)
    metrics.TASK_RETRIES.labels(task.name, type(exc).__name__).inc()
    log.warning("retrying after %s: %s", type(exc).__name__, exc, extra={"fields": {"countdown_s": countdown}})
    return task.retry(exc=exc, countdown=countdown, max_retries=None)


def may_take_over(task: VoxmillTask) -> bool:
    """Whether this message may take a running segment over before its stage deadline: a
    redelivery (its worker died, or held it past the visibility timeout) or the owner's own
    retry may; a fresh copy (a sweeper re-send, a duplicate chain link) may not, so it never
    steals a segment from a live worker."""
    request = task.request
    return bool(request.retries) or bool((request.delivery_info or {}).get("redelivered"))


def run_stage(task: VoxmillTask, stage: Stage, segment_id: str, work: StageWork) -> str:
    runtime = task.runtime
    sid = uuid.UUID(segment_id)
    bind_log_context(segment_id=segment_id, stage=stage.value)
    take_over = may_take_over(task)
    claim_tries = 0

    def claim_once(session: Session) -> StageClaim | ClaimRefused:
        nonlocal claim_tries
        claim_tries += 1
        # After a lost connection the previous try may have committed unseen: the segment is
        # then ours already, and this try must be allowed to claim it again.
        return lifecycle.claim_stage(session, runtime, sid, stage, take_over=take_over or claim_tries > 1)

    try:
        claim = write_with_retry(runtime, claim_once, f"claim of {stage.value}")
    except Exception as exc:
        if is_transient(exc):
            raise retry_task(task, exc, attempt=task.request.retries + 1) from exc
        raise
    if claim is ClaimRefused.ALREADY_DONE:
        return segment_id
    if claim is ClaimRefused.SKIP:
        raise Ignore()
    bind_log_context(job_id=str(claim.job_id), attempt=claim.attempt, render=claim.render_attempt)

    try:
        with metrics.timed(stage.value):
            output = work(runtime, claim)
    except Exception as exc:
        if is_transient(exc) and claim.attempt < runtime.settings.task_max_attempts:
            raise retry_task(task, exc, claim.attempt) from exc
        if not isinstance(exc, (PermanentJobError, RetryLater)):
            log.exception("stage failed with an unexpected error")
        code, message = error_code(exc), str(exc) or type(exc).__name__
        write_with_retry(
            runtime,
            lambda session: lifecycle.fail_segment(session, runtime, sid, code, message),
            "record of a failed segment",
        )
        raise Ignore() from exc

    # The work is done and its objects verified in storage: wait out a database outage here
    # rather than redo the work.
    tries = 0

    def record(session: Session) -> bool:
        nonlocal tries
        tries += 1
        return lifecycle.complete_stage(session, runtime, claim, output)

    try:
        completed = write_with_retry(runtime, record, f"record of {stage.value} result")
    except Exception as exc:
        if is_transient(exc):
            # The objects are stored under deterministic keys: the retry redoes the work and
            # overwrites them with the same bytes, then records the result.
            raise retry_task(task, exc, claim.attempt) from exc
        raise
    if not completed:
        if tries > 1 and _reached(runtime, sid, stage.done):
            # A commit whose acknowledgement was lost with the connection: the result is
            # recorded, so the chain goes on (a duplicate next message finds its guard false).
            return segment_id
        raise Ignore()
    return segment_id


def _reached(runtime: Runtime, segment_id: uuid.UUID, status: SegmentStatus) -> bool:
    def read(session: Session) -> bool:
        return session.scalar(select(Segment.status).where(Segment.id == segment_id)) == status.value

    return write_with_retry(runtime, read, "read of segment status")
