"""The gpt queue's tasks: planning a job into segments (once its voice has features for the job's
model), and text → semantic tokens."""

from __future__ import annotations

import uuid
from dataclasses import replace

from celery import Celery
from sqlalchemy.orm import Session

from db.models import Job, Voice
from jobs import cache, dispatch, lifecycle, metrics
from jobs.books import BookOptions
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.errors import RetryLater
from jobs.keys import segment_object_key
from jobs.lifecycle import StageClaim, StageOutput
from jobs.logs import bind_log_context
from jobs.models import ModelRef, features_key
from jobs.runtime import Runtime, after_commit
from jobs.stages import error_code, is_transient, retry_task, run_stage
from jobs.states import JobStatus, Stage, VoiceStatus
from jobs.voices import voice_features
from workers.gpt.book_planning import plan_book
from workers.gpt.planning import plan_segments
from workers.gpt.sources import parse_source


def plan(runtime: Runtime, job_id: uuid.UUID) -> None:
    settings = runtime.settings
    with runtime.transaction() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            return
        planned: list[lifecycle.PlannedSegment] = []
        if job.status == JobStatus.QUEUED.value:
            model = ModelRef.from_job(job)
            if model is not None and not features_ready(runtime, session, job, model):
                return
            job.model_version = runtime.model_version if model is None else model.version
            # A registered model's name and both checksums enter every content key.
            label = job.model_version if model is None else model.label
            if job.source_key is not None:
                planned = plan_book_job(runtime, job, label)
            else:
                planned = plan_segments(
                    job.text,
                    job.split_method,
                    job.language,
                    job.voice_id,
                    label,
                    job.params,
                    settings.segment_max_chars,
                )
            # Every segment already rendered for this tenant starts finished (render cache).
            found = cache.lookup_many(runtime, session, job.tenant_id, [(p.content_key, len(p.text)) for p in planned])
            planned = [replace(p, reuse=found.get(p.content_key)) for p in planned]
        lifecycle.start_job(session, runtime, job_id, planned)


def features_ready(runtime: Runtime, session: Session, job: Job, model: ModelRef) -> bool:
    """Whether the job's voice has features for the job's model. The first job of a voice on a
    model has them computed on the sovits queue (``voice_features``), which plans the job again
    once they are stored; meanwhile the job stays queued."""
    voice = session.get(Voice, job.voice_id)
    if voice is None or voice.status != VoiceStatus.READY.value:
        if voice is not None and voice.status in (VoiceStatus.PENDING.value, VoiceStatus.PROCESSING.value):
            raise RetryLater("the voice is still being processed", code="voice_not_ready")
        return True  # the stages report the unusable voice
    if features_key(session, voice.id, model.sovits_sha256) is not None:
        return True
    job_id = job.id
    after_commit(session, lambda: dispatch.voice_features(runtime, job_id))
    return False


def plan_book_job(runtime: Runtime, job: Job, label: str) -> list[lifecycle.PlannedSegment]:
    """Parse the stored source and plan its chapters; the chapter titles go on the job."""
    assert job.source_key is not None and job.source_format is not None
    book = parse_source(runtime.storage.get(job.source_key), job.source_format)
    options = BookOptions.from_dict(job.book, runtime.settings)
    result = plan_book(
        book,
        options,
        job.split_method,
        job.language,
        job.voice_id,
        label,
        job.params,
        runtime.settings.segment_max_chars,
    )
    job.book = {**options.as_dict(), "title": book.title, "chapters": result.chapter_titles}
    return result.segments


def synthesize_semantic(runtime: Runtime, claim: StageClaim) -> StageOutput:
    voice = voice_features(runtime, claim)
    columns: dict[str, object] = {}
    if runtime.settings.gpt_batch_size > 1 and claim.model is None:
        # This task's segment joins the next batched T2S run of this worker (jobs.batching); the
        # claim before and the completion after stay this task's own. Segments on registered
        # models run one by one: a batch shares one model's weights.
        semantic, batch = runtime.semantic_batcher.submit((claim.text, claim.language, voice, claim.params))
        columns = {"gpt_batch_id": batch.id, "gpt_batch_size": batch.size}
    else:
        semantic = runtime.semantic_engine_for(claim.model).text_to_semantic(
            claim.text, claim.language, voice, claim.params
        )
    key = segment_object_key(claim.tenant_id, claim.content_key, "semantic.npz")
    stored = runtime.storage.put(key, semantic.to_bytes(), "application/octet-stream")
    metrics.T2S_STOPS.labels(semantic.stop_reason or "unknown").inc()
    return StageOutput(
        columns={"semantic_key": key, "stop_reason": semantic.stop_reason, **columns}, artifacts={"semantic": stored}
    )


def register(app: Celery) -> None:
    @bound_task(app, TaskName.PLAN_JOB)
    def plan_job(self: VoxmillTask, job_id: str) -> None:
        bind_log_context(job_id=job_id, stage="plan")
        try:
            with metrics.timed("plan"):
                plan(self.runtime, uuid.UUID(job_id))
        except Exception as exc:
            if is_transient(exc):
                raise retry_task(self, exc, self.request.retries + 1) from exc
            with self.runtime.transaction() as session:
                lifecycle.fail_job(
                    session, self.runtime, uuid.UUID(job_id), JobStatus.QUEUED, error_code(exc), str(exc)
                )

    @bound_task(app, TaskName.SYNTHESIZE_SEMANTIC)
    def semantic_task(self: VoxmillTask, segment_id: str) -> str:
        return run_stage(self, Stage.GPT, segment_id, synthesize_semantic)
