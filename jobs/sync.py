"""Synchronous renders for the short-text endpoints. A short text goes through the ordinary job
path — a job row, planning, the gpt → sovits → post chains, their retries and content keys — and
the caller follows the job's rows, segment by segment in order, until each segment's finished
audio is stored. Nothing here changes a state except through ``jobs.lifecycle``: when the caller
gives up (timeout, client gone) the job is cancelled with ``lifecycle.cancel_job``.

Distributed mode: the API process only submits and reads rows; the worker pools render. Embedded
mode: the stages run inline inside ``submit_job`` (Celery's eager mode), so the submission runs
in a thread of its own while the caller follows the rows, and the first segment can be sent while
the later ones are still being synthesised, as on a cluster.

Waiting is polling: one small read per interval, short right after progress and backing off while
nothing changes (``sync_poll_interval_s`` → ``sync_poll_max_interval_s``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

import anyio
from sqlalchemy import select

from db.models import Job, Segment
from jobs import lifecycle, voice_catalog
from jobs.runtime import Runtime
from jobs.states import JobStatus, SegmentStatus
from jobs.submission import JobRequest, RequestRejected, submit_job
from jobs.tenants import Identity

log = logging.getLogger("voxmill.sync")

# A failed render before any audio was sent answers with the failing segment's code; these
# codes say the request itself cannot be rendered, every other failure is the pipeline's (502).
CLIENT_FAILURES = {
    "empty_text": 422,
    "unspeakable_text": 422,
    "voice_unavailable": 409,
    "invalid_loudness": 422,
}


class SyncTimedOut(RequestRejected):
    """The render did not finish within ``sync_timeout_s``; the job has been cancelled."""

    def __init__(self, job_id: uuid.UUID, timeout_s: float) -> None:
        super().__init__(
            504,
            "sync_timeout",
            f"job {job_id} did not finish within {timeout_s:g} s and was cancelled; "
            "submit long or slow work with POST /v1/jobs",
            {"Voxmill-Job-Id": str(job_id)},
        )
        self.job_id = job_id


class SyncFailed(RequestRejected):
    """The job failed or was cancelled; ``code`` is the failing segment's (or the job's)."""

    def __init__(self, job_id: uuid.UUID, status: int, code: str, message: str) -> None:
        super().__init__(status, code, f"job {job_id}: {message}", {"Voxmill-Job-Id": str(job_id)})
        self.job_id = job_id


@dataclass(frozen=True)
class FinishedSegment:
    index: int
    audio_key: str
    duration_s: float | None


@dataclass(frozen=True)
class Snapshot:
    """What one poll read: the job's state and its newly finished segments, in order."""

    status: JobStatus
    total: int
    model_version: str | None
    finished: list[FinishedSegment]
    failure: tuple[str, str] | None  # (code, message) of a failed segment or job


def check_text(runtime: Runtime, text: str) -> None:
    limit = runtime.settings.sync_max_chars
    if len(text) > limit:
        raise RequestRejected(
            413,
            "text_too_long",
            f"text has {len(text)} characters; synchronous requests take at most {limit} (use POST /v1/jobs)",
        )


def find_voice(runtime: Runtime, tenant_id: uuid.UUID, ref: str) -> uuid.UUID:
    """The id of the voice named by ``ref`` (an id or a name), or 404."""
    with runtime.transaction() as session:
        found = voice_catalog.find_voice(session, tenant_id, ref)
        if found is None:
            raise RequestRejected(404, "voice_not_found", f"no voice with the id or name {ref!r}")
        return found.id


def snapshot(runtime: Runtime, job_id: uuid.UUID, next_index: int) -> Snapshot:
    with runtime.transaction() as session:
        job = session.execute(
            select(Job.status, Job.segments_total, Job.model_version, Job.error_code, Job.error_message).where(
                Job.id == job_id
            )
        ).one()
        rows = session.execute(
            select(
                Segment.index,
                Segment.status,
                Segment.audio_key,
                Segment.duration_s,
                Segment.error_code,
                Segment.error_message,
            )
            .where(Segment.job_id == job_id, Segment.index >= next_index)
            .order_by(Segment.index)
        ).all()
    finished: list[FinishedSegment] = []
    failure: tuple[str, str] | None = None
    for index, status, audio_key, duration_s, error_code, error_message in rows:
        if status == SegmentStatus.FAILED.value and failure is None:
            failure = (error_code or "segment_failed", error_message or "")
        if index == next_index + len(finished) and status == SegmentStatus.SUCCEEDED.value and audio_key:
            finished.append(FinishedSegment(index, audio_key, duration_s))
    if failure is None and job.status == JobStatus.FAILED.value:
        failure = (job.error_code or "job_failed", job.error_message or "")
    return Snapshot(JobStatus(job.status), job.segments_total, job.model_version, finished, failure)


def _job_exists(runtime: Runtime, job_id: uuid.UUID) -> bool:
    with runtime.transaction() as session:
        return session.scalar(select(Job.id).where(Job.id == job_id)) is not None


def _cancel(runtime: Runtime, job_id: uuid.UUID) -> bool:
    with runtime.transaction() as session:
        return lifecycle.cancel_job(session, runtime, job_id)


class SyncRender:
    """A submitted job being followed. Iterate ``segments()`` for its finished segments in
    order; call ``abandon()`` when the caller stops listening before the end."""

    def __init__(self, runtime: Runtime, job_id: uuid.UUID, deadline: float) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.deadline = deadline  # time.monotonic()
        self.model_version: str | None = None
        self.total: int | None = None
        self.complete = False
        self._next = 0

    async def segments(self) -> AsyncIterator[FinishedSegment]:
        settings = self.runtime.settings
        interval = settings.sync_poll_interval_s
        while True:
            snap = await anyio.to_thread.run_sync(snapshot, self.runtime, self.job_id, self._next)
            self.model_version = snap.model_version or self.model_version
            if snap.total:
                self.total = snap.total
            for segment in snap.finished:
                self._next = segment.index + 1
                yield segment
            if snap.total and self._next >= snap.total:
                self.complete = True
                return
            if snap.failure is not None:
                code, message = snap.failure
                raise SyncFailed(self.job_id, CLIENT_FAILURES.get(code, 502), code, message or code)
            if snap.status is JobStatus.CANCELLED:
                raise SyncFailed(self.job_id, 409, "job_cancelled", "the job was cancelled")
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                await self.abandon()
                raise SyncTimedOut(self.job_id, settings.sync_timeout_s)
            interval = settings.sync_poll_interval_s if snap.finished else min(
                interval * 1.5, settings.sync_poll_max_interval_s
            )
            await anyio.sleep(min(interval, remaining))

    async def abandon(self) -> None:
        """Cancel the job unless every segment was delivered: nobody will hear the rest."""
        if self.complete:
            return
        with anyio.CancelScope(shield=True):
            cancelled = await anyio.to_thread.run_sync(_cancel, self.runtime, self.job_id)
        if cancelled:
            log.info("synchronous render abandoned; job cancelled", extra={"fields": {"job_id": str(self.job_id)}})


async def start(
    runtime: Runtime, tenant_id: uuid.UUID, request: JobRequest, caller: Identity | None = None
) -> SyncRender:
    """Submit ``request`` as a job admitted for ``caller`` (``jobs.limits.admit_job``; validation
    errors raise here, before anything is sent) and return the render to follow; its deadline
    starts now."""
    check_text(runtime, request.text)
    deadline = time.monotonic() + runtime.settings.sync_timeout_s
    if runtime.settings.embedded:
        job_id = await _submit_inline(runtime, tenant_id, request, caller)
    else:
        job, _ = await anyio.to_thread.run_sync(partial(submit_job, runtime, tenant_id, request, caller=caller))
        job_id = job.id
    return SyncRender(runtime, job_id, deadline)


async def _submit_inline(
    runtime: Runtime, tenant_id: uuid.UUID, request: JobRequest, caller: Identity | None = None
) -> uuid.UUID:
    """Embedded mode: ``submit_job`` renders the whole job before it returns, so it runs in its
    own thread; returns once the job row is committed, or raises the submission's rejection."""
    job_id = uuid.uuid4()
    outcome: Future[uuid.UUID] = Future()

    def run() -> None:
        try:
            job, _ = submit_job(runtime, tenant_id, request, job_id=job_id, caller=caller)
            outcome.set_result(job.id)
        except BaseException as exc:
            outcome.set_exception(exc)
            if not isinstance(exc, RequestRejected):
                log.exception("inline render of job %s failed", job_id)

    threading.Thread(target=run, name=f"voxmill-sync-{job_id}", daemon=True).start()
    interval = runtime.settings.sync_poll_interval_s
    while True:
        if outcome.done():
            return outcome.result()  # raises the rejection, if any
        if await anyio.to_thread.run_sync(_job_exists, runtime, job_id):
            return job_id
        await anyio.sleep(interval)
