"""Every status change of a job, segment, voice or webhook delivery happens here.

Each change is one ``UPDATE … SET status = :to WHERE id = :id AND status = :expected`` (plus an
attempt guard where two workers could race), recorded in ``state_transitions`` in the same
transaction. A redelivered or stale task therefore finds its guard false and changes nothing.
Work that must follow a change (enqueueing the next task, a webhook) is registered with
``after_commit`` and runs only once the change is committed.

A job completes without a chord: finishing a segment increments the job's counters with an
atomic ``UPDATE … RETURNING``; exactly one transaction sees ``done + failed == total`` and moves
the job on. A chord's counter lives in the result backend and is lost with a worker mid-header;
this one lives in the job row, next to the state it describes.

A segment whose content key already has a finished, verified render of the same tenant (the
render cache, ``jobs.cache``) is created by planning directly as ``succeeded`` and counted done,
and nothing is enqueued for it: that is how a re-submitted book resumes and how an edited book
re-renders only the segments its edits touch.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, defer

from db.models import (
    Artifact,
    Job,
    RenderAttempt,
    Segment,
    StateTransition,
    Tenant,
    Voice,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)
from jobs import cache, dispatch, metrics
from jobs.engine import StopReason, SynthesisParams, stop_reason_of
from jobs.errors import PermanentJobError
from jobs.models import ModelRef, feature_keys, features_key
from jobs.quality import RenderQuality, render_seed, should_rerender
from jobs.runtime import Runtime, after_commit
from jobs.states import (
    JOB_TERMINAL,
    JOB_TRANSITIONS,
    SEGMENT_TERMINAL,
    SEGMENT_TRANSITIONS,
    VOICE_TRANSITIONS,
    DeliveryStatus,
    JobStatus,
    SegmentStatus,
    Stage,
    VoiceStatus,
)
from jobs.storage import StoredObject

DEFAULT_TENANT = "default"


class TransitionError(RuntimeError):
    """A change that the state tables forbid: a programming error, not a race."""


def _record(
    session: Session,
    entity: str,
    entity_id: uuid.UUID,
    job_id: uuid.UUID | None,
    from_status: str | None,
    to_status: str,
    attempt: int = 0,
) -> None:
    session.add(
        StateTransition(
            entity=entity,
            entity_id=entity_id,
            job_id=job_id,
            from_status=from_status,
            to_status=to_status,
            attempt=attempt,
        )
    )


def _guarded_update(
    session: Session,
    model: Any,
    entity_id: uuid.UUID,
    expected: Enum,
    to: Enum,
    allowed: dict[Any, frozenset[Any]],
    guards: tuple[ColumnElement[bool], ...] = (),
    values: dict[str, Any] | None = None,
) -> bool:
    if to not in allowed[expected]:
        raise TransitionError(f"{model.__tablename__}: {expected.value} → {to.value} is not allowed")
    stmt = (
        update(model)
        .where(model.id == entity_id, model.status == expected.value, *guards)
        .values(status=to.value, updated_at=utcnow(), **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return bool(session.execute(stmt).rowcount == 1)  # type: ignore[attr-defined]


def transition_job(
    session: Session,
    job_id: uuid.UUID,
    expected: JobStatus,
    to: JobStatus,
    values: dict[str, Any] | None = None,
) -> bool:
    changed = _guarded_update(session, Job, job_id, expected, to, JOB_TRANSITIONS, values=values)
    if changed:
        _record(session, "job", job_id, job_id, expected.value, to.value)
        if to in JOB_TERMINAL:
            _observe_job_finished(session, job_id, to)
    return changed


def _observe_job_finished(session: Session, job_id: uuid.UUID, status: JobStatus) -> None:
    job = session.get(Job, job_id)
    seconds = (utcnow() - job.created_at).total_seconds() if job is not None else None
    metrics.observe_after_commit(session, lambda: metrics.job_finished(status.value, seconds))


def transition_segment(
    session: Session,
    segment_id: uuid.UUID,
    job_id: uuid.UUID,
    expected: SegmentStatus,
    to: SegmentStatus,
    attempt: int | None = None,
    values: dict[str, Any] | None = None,
) -> bool:
    guards = (Segment.attempts == attempt,) if attempt is not None else ()
    changed = _guarded_update(
        session, Segment, segment_id, expected, to, SEGMENT_TRANSITIONS, guards, values
    )
    if changed:
        recorded_attempt = (values or {}).get("attempts", attempt or 0)
        _record(session, "segment", segment_id, job_id, expected.value, to.value, recorded_attempt)
        if to in SEGMENT_TERMINAL:
            metrics.observe_after_commit(session, metrics.SEGMENTS_FINISHED.labels(to.value).inc)
    return changed


def transition_voice(
    session: Session,
    voice_id: uuid.UUID,
    expected: VoiceStatus,
    to: VoiceStatus,
    values: dict[str, Any] | None = None,
) -> bool:
    changed = _guarded_update(session, Voice, voice_id, expected, to, VOICE_TRANSITIONS, values=values)
    if changed:
        _record(session, "voice", voice_id, None, expected.value, to.value)
    return changed


# --------------------------------------------------------------------------- tenants


def default_tenant(session: Session) -> Tenant:
    """The tenant that owns everything when authentication is off (embedded mode, dev)."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == DEFAULT_TENANT))
    if tenant is None:
        tenant = Tenant(name=DEFAULT_TENANT)
        session.add(tenant)
        session.flush()
    return tenant


# --------------------------------------------------------------------------- voices


def create_voice(
    session: Session,
    runtime: Runtime,
    tenant_id: uuid.UUID,
    name: str,
    language: str,
    transcript: str | None,
    upload_key: str,
    analysis: dict[str, Any],
    voice_id: uuid.UUID | None = None,
    model_id: uuid.UUID | None = None,
) -> Voice:
    voice = Voice(
        id=voice_id or uuid.uuid4(),
        model_id=model_id,
        tenant_id=tenant_id,
        name=name,
        status=VoiceStatus.PENDING.value,
        language=language,
        transcript=transcript,
        upload_key=upload_key,
        analysis=analysis,
    )
    session.add(voice)
    session.flush()
    _record(session, "voice", voice.id, None, None, VoiceStatus.PENDING.value)
    after_commit(session, lambda: dispatch.process_voice(runtime, voice.id))
    return voice


@dataclass(frozen=True)
class VoiceWork:
    voice_id: uuid.UUID
    tenant_id: uuid.UUID
    language: str
    transcript: str | None
    upload_key: str
    attempt: int


def claim_voice(session: Session, voice_id: uuid.UUID, max_attempts: int) -> VoiceWork | None:
    voice = session.get(Voice, voice_id, populate_existing=True)
    if voice is None or voice.upload_key is None:
        return None
    status = VoiceStatus(voice.status)
    if status not in (VoiceStatus.PENDING, VoiceStatus.PROCESSING):
        return None
    if voice.attempts >= max_attempts:
        fail_voice(session, voice_id, "attempts_exhausted", "voice processing kept failing")
        return None
    attempt = voice.attempts + 1
    changed = _guarded_update(
        session,
        Voice,
        voice_id,
        status,
        VoiceStatus.PROCESSING,
        VOICE_TRANSITIONS,
        (Voice.attempts == voice.attempts,),
        {"attempts": attempt},
    )
    if not changed:
        return None
    _record(session, "voice", voice_id, None, status.value, VoiceStatus.PROCESSING.value, attempt)
    return VoiceWork(voice.id, voice.tenant_id, voice.language, voice.transcript, voice.upload_key, attempt)


def voice_ready(session: Session, voice_id: uuid.UUID, features_key: str, model_version: str) -> bool:
    return transition_voice(
        session,
        voice_id,
        VoiceStatus.PROCESSING,
        VoiceStatus.READY,
        {"features_key": features_key, "model_version": model_version},
    )


def fail_voice(session: Session, voice_id: uuid.UUID, code: str, message: str) -> bool:
    voice = session.get(Voice, voice_id, populate_existing=True)
    if voice is None:
        return False
    status = VoiceStatus(voice.status)
    if VoiceStatus.FAILED not in VOICE_TRANSITIONS[status]:
        return False
    return transition_voice(
        session, voice_id, status, VoiceStatus.FAILED, {"failure_code": code, "failure_message": message}
    )


def delete_voice(session: Session, voice_id: uuid.UUID) -> list[str]:
    """Mark the voice deleted; returns the storage keys the caller must remove after commit."""
    voice = session.get(Voice, voice_id, populate_existing=True)
    if voice is None or voice.status == VoiceStatus.DELETED.value:
        return []
    keys = [k for k in (voice.features_key, voice.upload_key) if k]
    keys += [k for k in feature_keys(session, voice_id) if k not in keys]
    transition_voice(
        session,
        voice_id,
        VoiceStatus(voice.status),
        VoiceStatus.DELETED,
        {"features_key": None, "upload_key": None},
    )
    return keys


# --------------------------------------------------------------------------- jobs


def create_job(session: Session, runtime: Runtime, **columns: Any) -> Job:
    """Insert a queued job; planning is enqueued once the row is committed."""
    job = Job(status=JobStatus.QUEUED.value, **columns)
    session.add(job)
    session.flush()
    _record(session, "job", job.id, job.id, None, JobStatus.QUEUED.value)
    after_commit(session, lambda: dispatch.plan_job(runtime, job.id))
    metrics.observe_after_commit(session, metrics.JOBS_SUBMITTED.inc)
    return job


@dataclass(frozen=True)
class PlannedSegment:
    text: str
    content_key: str
    # Books: chapter index, silence after the segment, the text as written (``text`` is spoken).
    chapter: int | None = None
    pause_after_s: float | None = None
    caption: str | None = None
    # A finished render of the same content key (render cache): the segment starts finished.
    reuse: cache.CachedRender | None = None


def start_job(
    session: Session, runtime: Runtime, job_id: uuid.UUID, planned: list[PlannedSegment]
) -> list[uuid.UUID]:
    """queued → running with its segments inserted; returns the segments to enqueue. On a
    redelivered planning task (job already running) it returns the segments still queued."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return []
    if job.status == JobStatus.RUNNING.value:
        queued = session.scalars(
            select(Segment.id)
            .where(Segment.job_id == job_id, Segment.status == SegmentStatus.QUEUED.value)
            .order_by(Segment.index)
        ).all()
        ids = list(queued)
    elif job.status == JobStatus.QUEUED.value:
        if not planned:
            fail_job(session, runtime, job_id, JobStatus.QUEUED, "empty_text", "the text has nothing to say")
            return []
        now = utcnow()
        segments = [
            Segment(
                job_id=job_id,
                index=i,
                text=p.text,
                content_key=p.content_key,
                chapter=p.chapter,
                pause_after_s=p.pause_after_s,
                caption=p.caption,
                status=(SegmentStatus.SUCCEEDED if p.reuse else SegmentStatus.QUEUED).value,
                audio_key=p.reuse.audio_key if p.reuse else None,
                duration_s=p.reuse.duration_s if p.reuse else None,
                # A reused render keeps the verdict it had: one below the gate stays below it.
                quality_passed=p.reuse.quality_passed if p.reuse else None,
                quality_verdict=p.reuse.quality_verdict if p.reuse else None,
                quality_scores=p.reuse.quality_scores if p.reuse else None,
                stop_reason=p.reuse.stop_reason if p.reuse else None,
            )
            for i, p in enumerate(planned)
        ]
        session.add_all(segments)
        session.flush()
        reused = [(seg, p.reuse) for seg, p in zip(segments, planned) if p.reuse]
        transition_job(
            session,
            job_id,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            {"segments_total": len(segments), "segments_done": len(reused), "started_at": now},
        )
        for seg in segments:
            _record(session, "segment", seg.id, job_id, None, seg.status)
        for seg, render in reused:
            record_artifact(session, job.tenant_id, job_id, seg.id, "audio", render.stored())
        cache.mark_used(session, job.tenant_id, sorted({render.content_key for _, render in reused}))
        ids = [s.id for s in segments if s.status == SegmentStatus.QUEUED.value]
        if not ids and transition_job(session, job_id, JobStatus.RUNNING, JobStatus.ASSEMBLING):
            after_commit(session, lambda: dispatch.assemble_job(runtime, job_id))
            return []
    else:
        return []

    def enqueue_chains() -> None:
        for segment_id in ids:
            dispatch.segment_chain(runtime, segment_id)

    after_commit(session, enqueue_chains)
    return ids


class ClaimRefused(Enum):
    ALREADY_DONE = "already_done"
    """This stage already finished (a redelivery): continue the chain, changing nothing."""
    SKIP = "skip"
    """Another attempt owns the segment, it moved past this stage, or it is cancelled/failed."""


@dataclass(frozen=True)
class StageClaim:
    """What a stage needs to know about the segment it claimed, read once under the claim."""

    stage: Stage
    attempt: int
    segment_id: uuid.UUID
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    voice_id: uuid.UUID
    index: int
    text: str
    language: str
    content_key: str
    params: SynthesisParams
    output_format: str
    sample_rate: int
    semantic_key: str | None
    waveform_key: str | None
    voice_status: str
    voice_features_key: str | None  # the features for ``model`` (the voice's own when None)
    render_attempt: int = 1  # 1 = first render; ``params.seed`` is already this render's seed
    stop_reason: StopReason | None = None  # how this render's T2S stopped (set by the gpt stage)
    model: ModelRef | None = None  # the registered model the job runs on (None: the default files)


def claim_stage(
    session: Session, runtime: Runtime, segment_id: uuid.UUID, stage: Stage, take_over: bool = True
) -> StageClaim | ClaimRefused:
    """Claim the segment for ``stage``. A segment already running the stage is taken over
    (a new attempt) only by a caller allowed to (``take_over``: a redelivered or retried
    message) or once the running attempt's deadline has passed; otherwise it is left to the
    attempt that holds it."""
    row = session.execute(
        select(Segment, Job, Voice)
        .join(Job, Segment.job_id == Job.id)
        .join(Voice, Job.voice_id == Voice.id)
        .where(Segment.id == segment_id)
        # Every stage of every segment claims: the job's whole text and the voice's analysis
        # are not needed here and would be read thousands of times for a long text.
        .options(defer(Job.text), defer(Voice.analysis), defer(Voice.transcript))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        return ClaimRefused.SKIP
    segment, job, voice = row
    status = SegmentStatus(segment.status)
    if job.status == JobStatus.CANCELLED.value:
        _cancel_segment(session, segment)
        return ClaimRefused.SKIP
    if status == stage.done:
        return ClaimRefused.ALREADY_DONE
    if status not in (stage.waiting, stage.running):
        return ClaimRefused.SKIP
    if (
        status == stage.running
        and not take_over
        and segment.stage_deadline_at is not None
        and segment.stage_deadline_at > utcnow()
    ):
        return ClaimRefused.SKIP
    if segment.attempts >= runtime.settings.task_max_attempts:
        fail_segment(
            session,
            runtime,
            segment_id,
            "attempts_exhausted",
            f"{stage.value} stage failed {segment.attempts} times",
        )
        return ClaimRefused.SKIP
    attempt = segment.attempts + 1
    deadline = utcnow() + timedelta(seconds=runtime.settings.task_time_limit_s)
    claimed = transition_segment(
        session,
        segment_id,
        job.id,
        status,
        stage.running,
        attempt=segment.attempts,
        values={
            "attempts": attempt,
            "total_attempts": segment.total_attempts + 1,
            "stage_deadline_at": deadline,
        },
    )
    if not claimed:
        return ClaimRefused.SKIP
    waited = (utcnow() - segment.updated_at).total_seconds()
    metrics.observe_after_commit(session, lambda: metrics.STAGE_WAIT_SECONDS.labels(stage.value).observe(waited))
    params = SynthesisParams.from_dict(job.params)
    model = ModelRef.from_job(job)
    features = voice.features_key if model is None else features_key(session, voice.id, model.sovits_sha256)
    return StageClaim(
        stage=stage,
        attempt=attempt,
        segment_id=segment.id,
        job_id=job.id,
        tenant_id=job.tenant_id,
        voice_id=job.voice_id,
        index=segment.index,
        text=segment.text,
        language=job.language,
        content_key=segment.content_key,
        params=replace(params, seed=render_seed(params.seed, segment.render_attempt)),
        output_format=job.output_format,
        sample_rate=job.sample_rate,
        semantic_key=segment.semantic_key,
        waveform_key=segment.waveform_key,
        voice_status=voice.status,
        voice_features_key=features,
        render_attempt=segment.render_attempt,
        stop_reason=stop_reason_of(segment.stop_reason),
        model=model,
    )


@dataclass
class StageOutput:
    """What a stage produced: row columns to set (storage keys, duration) and stored objects."""

    columns: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, StoredObject] = field(default_factory=dict)
    quality: RenderQuality | None = None  # post stage: the render's scores, when scoring is on


def complete_stage(session: Session, runtime: Runtime, claim: StageClaim, output: StageOutput) -> bool:
    """running → done, if this attempt still owns the segment; records its artifacts and, for the
    last stage, counts the segment towards its job. A post stage whose render the quality gate
    rejects sends the segment back instead (``rerender_segment``)."""
    quality = output.quality if claim.stage is Stage.POST else None
    if quality is not None and should_rerender(runtime.settings, claim.render_attempt, quality):
        return rerender_segment(session, runtime, claim, output, quality)
    extra = _verdict_columns(quality) if quality is not None else {}
    done = transition_segment(
        session,
        claim.segment_id,
        claim.job_id,
        claim.stage.running,
        claim.stage.done,
        attempt=claim.attempt,
        values={"attempts": 0, "stage_deadline_at": None, **output.columns, **extra},
    )
    if not done:
        return False
    for kind, stored in output.artifacts.items():
        record_artifact(session, claim.tenant_id, claim.job_id, claim.segment_id, kind, stored)
    if quality is not None:
        record_render(session, claim, quality)
    if claim.stage is Stage.POST:
        if "audio" in output.artifacts:
            duration = output.columns.get("duration_s")
            cache.record(
                session,
                claim.tenant_id,
                claim.content_key,
                output.artifacts["audio"],
                duration,
                quality,
                claim.stop_reason,
            )
        _segment_finished(session, runtime, claim.job_id, failed=False)
    return True


def _verdict_columns(quality: RenderQuality) -> dict[str, Any]:
    return {
        "quality_passed": quality.passed,
        "quality_verdict": quality.verdict,
        "quality_scores": quality.as_dict(),
    }


def rerender_segment(
    session: Session, runtime: Runtime, claim: StageClaim, output: StageOutput, quality: RenderQuality
) -> bool:
    """post_running → queued: the quality gate rejected this render. The render counter moves on
    (its seed with it) and the whole chain is enqueued again after commit; the rejected render's
    scores stay recorded. Bounded by ``quality_max_rerenders`` (``jobs.quality.should_rerender``)."""
    sent_back = transition_segment(
        session,
        claim.segment_id,
        claim.job_id,
        SegmentStatus.POST_RUNNING,
        SegmentStatus.QUEUED,
        attempt=claim.attempt,
        values={
            **output.columns,
            "attempts": 0,
            "stage_deadline_at": None,
            "render_attempt": claim.render_attempt + 1,
            **_verdict_columns(quality),
        },
    )
    if not sent_back:
        return False
    # The stored objects are overwritten by the next render under the same keys; their rows
    # follow, so the bucket and the artifact rows always agree.
    for kind, stored in output.artifacts.items():
        record_artifact(session, claim.tenant_id, claim.job_id, claim.segment_id, kind, stored)
    record_render(session, claim, quality)
    metrics.observe_after_commit(session, metrics.SEGMENT_RERENDERS.inc)
    segment_id = claim.segment_id
    after_commit(session, lambda: dispatch.segment_chain(runtime, segment_id))
    return True


def record_render(session: Session, claim: StageClaim, quality: RenderQuality) -> None:
    """One row per (segment, render): a redelivered post task replaces its render's row."""
    row = session.scalar(
        select(RenderAttempt).where(
            RenderAttempt.segment_id == claim.segment_id, RenderAttempt.attempt == claim.render_attempt
        )
    )
    if row is None:
        row = RenderAttempt(segment_id=claim.segment_id, job_id=claim.job_id, attempt=claim.render_attempt)
        session.add(row)
    dnsmos = quality.dnsmos or {}
    row.seed = claim.params.seed
    row.dnsmos_sig = dnsmos.get("sig")
    row.dnsmos_bak = dnsmos.get("bak")
    row.dnsmos_ovrl = dnsmos.get("ovrl")
    row.dnsmos_p808 = dnsmos.get("p808")
    row.similarity = quality.similarity
    row.passed = quality.passed
    row.verdict = quality.verdict
    row.stop_reason = quality.stop_reason
    row.failures = list(quality.failures)
    row.notes = list(quality.unscored) + list(quality.notes)
    row.created_at = utcnow()
    metrics.observe_after_commit(
        session, lambda: metrics.render_scored(quality.verdict, quality.dnsmos, quality.similarity)
    )


def fail_segment(
    session: Session, runtime: Runtime, segment_id: uuid.UUID, code: str, message: str
) -> bool:
    segment = session.get(Segment, segment_id, populate_existing=True)
    if segment is None or SegmentStatus(segment.status) in SEGMENT_TERMINAL:
        return False
    failed = transition_segment(
        session,
        segment_id,
        segment.job_id,
        SegmentStatus(segment.status),
        SegmentStatus.FAILED,
        values={"error_code": code, "error_message": message[:2000], "stage_deadline_at": None},
    )
    if failed:
        _segment_finished(session, runtime, segment.job_id, failed=True)
    return failed


def _cancel_segment(session: Session, segment: Segment) -> None:
    status = SegmentStatus(segment.status)
    if status not in SEGMENT_TERMINAL:
        transition_segment(session, segment.id, segment.job_id, status, SegmentStatus.CANCELLED)


def _segment_finished(session: Session, runtime: Runtime, job_id: uuid.UUID, failed: bool) -> None:
    counter = Job.segments_failed if failed else Job.segments_done
    done, failed_count, total, status = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values({counter: counter + 1, Job.updated_at: utcnow()})
        .returning(Job.segments_done, Job.segments_failed, Job.segments_total, Job.status)
        .execution_options(synchronize_session=False)
    ).one()
    if done + failed_count < total or status != JobStatus.RUNNING.value:
        return
    if failed_count:
        fail_job(
            session,
            runtime,
            job_id,
            JobStatus.RUNNING,
            "segments_failed",
            f"{failed_count} of {total} segments failed",
        )
        return
    if transition_job(session, job_id, JobStatus.RUNNING, JobStatus.ASSEMBLING):
        after_commit(session, lambda: dispatch.assemble_job(runtime, job_id))


@dataclass(frozen=True)
class AssemblyWork:
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    output_format: str
    sample_rate: int
    params: SynthesisParams
    segment_audio_keys: list[str]
    attempt: int
    book: dict[str, Any] | None = None  # a book's options and chapter titles (``jobs.books``)


def claim_assembly(session: Session, runtime: Runtime, job_id: uuid.UUID) -> AssemblyWork | None:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status != JobStatus.ASSEMBLING.value:
        return None
    if job.attempts >= runtime.settings.task_max_attempts:
        fail_job(session, runtime, job_id, JobStatus.ASSEMBLING, "attempts_exhausted", "assembly kept failing")
        return None
    claimed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.ASSEMBLING.value, Job.attempts == job.attempts)
        .values(attempts=job.attempts + 1)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        return None
    keys = session.scalars(
        select(Segment.audio_key).where(Segment.job_id == job_id).order_by(Segment.index)
    ).all()
    if any(k is None for k in keys):
        raise PermanentJobError("a finished segment has no stored audio", code="missing_segment_audio")
    return AssemblyWork(
        job_id=job.id,
        tenant_id=job.tenant_id,
        output_format=job.output_format,
        sample_rate=job.sample_rate,
        params=SynthesisParams.from_dict(job.params),
        segment_audio_keys=[k for k in keys if k is not None],
        attempt=job.attempts + 1,
        book=dict(job.book or {}) if job.source_key else None,
    )


def complete_job(
    session: Session,
    runtime: Runtime,
    job_id: uuid.UUID,
    audio: StoredObject,
    extra: dict[str, StoredObject] | None = None,
) -> bool:
    """assembling → succeeded with the job's audio (and, for books, its other outputs: chapter
    files, M4B, MP3, manifest, subtitles) recorded as artifacts."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return False
    if not transition_job(
        session, job_id, JobStatus.ASSEMBLING, JobStatus.SUCCEEDED, {"finished_at": utcnow()}
    ):
        return False
    record_artifact(session, job.tenant_id, job_id, None, "audio", audio)
    for kind, stored in (extra or {}).items():
        record_artifact(session, job.tenant_id, job_id, None, kind, stored)
    _schedule_webhook(session, runtime, job_id, "job.succeeded")
    return True


def fail_job(
    session: Session,
    runtime: Runtime,
    job_id: uuid.UUID,
    expected: JobStatus,
    code: str,
    message: str,
) -> bool:
    failed = transition_job(
        session,
        job_id,
        expected,
        JobStatus.FAILED,
        {"error_code": code, "error_message": message[:2000], "finished_at": utcnow()},
    )
    if failed:
        _schedule_webhook(session, runtime, job_id, "job.failed")
    return failed


def cancel_job(session: Session, runtime: Runtime, job_id: uuid.UUID) -> bool:
    """Cancel a job that has not finished; its segments stop at their next claim."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or JobStatus(job.status) in JOB_TERMINAL:
        return False
    if not transition_job(
        session, job_id, JobStatus(job.status), JobStatus.CANCELLED, {"finished_at": utcnow()}
    ):
        return False
    for segment in session.scalars(
        select(Segment)
        .where(Segment.job_id == job_id, Segment.status.not_in([s.value for s in SEGMENT_TERMINAL]))
        .execution_options(populate_existing=True)
    ):
        _cancel_segment(session, segment)
    _schedule_webhook(session, runtime, job_id, "job.cancelled")
    return True


def supersede_project_jobs(session: Session, runtime: Runtime, project_id: uuid.UUID) -> list[uuid.UUID]:
    """Cancel the project's unfinished jobs: a new render of the project replaces them, and
    whatever they finished is reused through the render cache."""
    active = session.scalars(
        select(Job.id).where(
            Job.project_id == project_id, Job.status.not_in([s.value for s in JOB_TERMINAL])
        )
    ).all()
    return [job_id for job_id in active if cancel_job(session, runtime, job_id)]


def record_artifact(
    session: Session,
    tenant_id: uuid.UUID,
    job_id: uuid.UUID,
    segment_id: uuid.UUID | None,
    kind: str,
    stored: StoredObject,
) -> None:
    """One row per (segment, kind), or per (job, kind) for job-level objects: a re-run replaces
    the row, just as its deterministic key replaced the object."""
    owner = Artifact.segment_id == segment_id if segment_id else Artifact.segment_id.is_(None)
    existing = session.scalar(
        select(Artifact).where(Artifact.job_id == job_id, owner, Artifact.kind == kind)
    )
    if existing is None:
        existing = Artifact(tenant_id=tenant_id, job_id=job_id, segment_id=segment_id, kind=kind)
        session.add(existing)
    existing.storage_key = stored.key
    existing.size_bytes = stored.size_bytes
    existing.sha256 = stored.sha256
    existing.content_type = stored.content_type
    existing.created_at = utcnow()


def segments_below_gate(session: Session, job_id: uuid.UUID) -> list[int]:
    """Indexes of the job's segments whose final render never passed the quality gate (failed it
    or could not be scored), reused renders included."""
    return list(
        session.scalars(
            select(Segment.index)
            .where(Segment.job_id == job_id, Segment.quality_passed.is_(False))
            .order_by(Segment.index)
        )
    )


@dataclass(frozen=True)
class QualitySummary:
    """What the gate found in a job's final renders, reused ones included."""

    below_gate: list[int]  # failed or unscored
    unscored: list[int]
    capped: list[int]  # T2S stopped at its token cap
    scored: int  # segments with a verdict
    passed: int


def quality_summary(session: Session, job_id: uuid.UUID) -> QualitySummary:
    rows: list[tuple[int, bool | None, str | None, str | None]] = [
        (index, passed, verdict, stop)
        for index, passed, verdict, stop in session.execute(
            select(Segment.index, Segment.quality_passed, Segment.quality_verdict, Segment.stop_reason)
            .where(Segment.job_id == job_id)
            .order_by(Segment.index)
        )
    ]
    return QualitySummary(
        below_gate=[index for index, passed, _, _ in rows if passed is False],
        unscored=[index for index, _, verdict, _ in rows if verdict == "unscored"],
        capped=[index for index, _, _, stop in rows if stop == "cap"],
        scored=sum(1 for _, passed, _, _ in rows if passed is not None),
        passed=sum(1 for _, passed, _, _ in rows if passed is True),
    )


# --------------------------------------------------------------------------- webhooks


def _schedule_webhook(session: Session, runtime: Runtime, job_id: uuid.UUID, event: str) -> None:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or not job.callback_url:
        return
    summary = quality_summary(session, job_id)
    delivery = WebhookDelivery(
        tenant_id=job.tenant_id,
        job_id=job_id,
        event=event,
        url=job.callback_url,
        status=DeliveryStatus.PENDING.value,
        next_attempt_at=utcnow(),
        payload={
            "event": event,
            "job": {
                "id": str(job.id),
                "status": job.status,
                "segments_total": job.segments_total,
                "segments_done": job.segments_done,
                "segments_failed": job.segments_failed,
                "segments_below_quality_gate": summary.below_gate,
                "segments_unscored": summary.unscored,
                "segments_t2s_cap": summary.capped,
                "error": {"code": job.error_code, "message": job.error_message}
                if job.error_code
                else None,
            },
        },
    )
    session.add(delivery)
    session.flush()
    delivery_id = delivery.id
    after_commit(session, lambda: dispatch.deliver_webhook(runtime, delivery_id))


@dataclass(frozen=True)
class DeliveryWork:
    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    event: str
    url: str
    payload: dict[str, Any]
    attempt: int
    created_at: datetime


# A delivery message may arrive this much before its next_attempt_at (clocks of two hosts).
DELIVERY_CLOCK_SLACK = timedelta(seconds=2)


def claim_delivery(
    session: Session, delivery_id: uuid.UUID, lease_s: float | None = None, take_over: bool = True
) -> DeliveryWork | None:
    """Claim the next attempt of a pending delivery. With ``lease_s`` the claim also moves
    ``next_attempt_at`` past the end of this attempt, so that neither the sweeper nor a duplicate
    message sends it again while it is in flight; only a caller allowed to ``take_over`` (a
    redelivered message: its worker died mid-attempt) claims it before then."""
    delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if delivery is None or delivery.status != DeliveryStatus.PENDING.value:
        return None
    now = utcnow()
    if (
        not take_over
        and delivery.next_attempt_at is not None
        and delivery.next_attempt_at > now + DELIVERY_CLOCK_SLACK
    ):
        return None
    leased = {"next_attempt_at": now + timedelta(seconds=lease_s)} if lease_s is not None else {}
    claimed = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING.value,
            WebhookDelivery.attempts == delivery.attempts,
        )
        .values(attempts=delivery.attempts + 1, updated_at=now, **leased)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:
        return None
    return DeliveryWork(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        event=delivery.event,
        url=delivery.url,
        payload=delivery.payload,
        attempt=delivery.attempts + 1,
        created_at=delivery.created_at,
    )


def record_delivery_attempt(
    session: Session,
    work: DeliveryWork,
    *,
    duration_ms: float,
    status_code: int | None,
    error: str | None,
    succeeded: bool,
    retry_at: datetime | None,
) -> DeliveryStatus | None:
    """Record one HTTP attempt and move the delivery on: delivered, retried at ``retry_at``, or
    failed for good when ``retry_at`` is None. The attempt row is always kept (the receiver had
    it); None when the guarded update matched no row (another attempt of the same delivery already
    moved it on), and then no state change is logged and nothing is to be retried."""
    session.add(
        WebhookAttempt(
            delivery_id=work.delivery_id,
            number=work.attempt,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            succeeded=succeeded,
        )
    )
    if succeeded:
        outcome = DeliveryStatus.DELIVERED
    elif retry_at is not None:
        outcome = DeliveryStatus.PENDING
    else:
        outcome = DeliveryStatus.FAILED
    now = utcnow()
    moved = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == work.delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING.value)
        .values(
            status=outcome.value,
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=retry_at,
            delivered_at=now if succeeded else None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if moved != 1:
        return None
    if outcome is not DeliveryStatus.PENDING:
        _record(session, "delivery", work.delivery_id, None, DeliveryStatus.PENDING.value, outcome.value, work.attempt)
    return outcome
