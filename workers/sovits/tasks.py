"""The sovits queue's tasks: semantic tokens → waveform, and voice onboarding (reference audio →
stored features, and a voice's features for a registered model the first time a job needs them).
Each process loads its models on first use; registered models through ``jobs.model_cache``."""

from __future__ import annotations

import logging
import uuid

from celery import Celery

from db.models import Job, Voice
from jobs import dispatch, lifecycle
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.engine import ReferenceClip, SemanticTokens
from jobs.errors import PermanentJobError
from jobs.keys import segment_object_key, voice_object_key
from jobs.lifecycle import StageClaim, StageOutput
from jobs.logs import bind_log_context
from jobs.models import ModelRef, features_key, features_object_name, record_features, voice_model
from jobs.runtime import Runtime, after_commit
from jobs.stages import error_code, is_transient, retry_task, run_stage
from jobs.states import JobStatus, Stage, VoiceStatus
from jobs.voices import voice_features

log = logging.getLogger("voxmill.sovits")


def synthesize_waveform(runtime: Runtime, claim: StageClaim) -> StageOutput:
    if claim.semantic_key is None:
        raise PermanentJobError("semantic tokens are missing", code="missing_semantic")
    voice = voice_features(runtime, claim)
    semantic = SemanticTokens.from_bytes(runtime.storage.get(claim.semantic_key))
    waveform = runtime.acoustic_engine_for(claim.model).synthesize(semantic, voice, claim.params)
    key = segment_object_key(claim.tenant_id, claim.content_key, "waveform.wav")
    stored = runtime.storage.put(key, waveform.to_wav_bytes(), "audio/wav")
    return StageOutput(
        columns={"waveform_key": key, "duration_s": waveform.duration_s},
        artifacts={"waveform": stored},
    )


def process_voice(task: VoxmillTask, voice_id: uuid.UUID) -> None:
    runtime = task.runtime
    bind_log_context(voice_id=str(voice_id), stage="voice")
    with runtime.transaction() as session:
        work = lifecycle.claim_voice(session, voice_id, runtime.settings.task_max_attempts)
    if work is None:
        return
    try:
        # A voice naming a model (or a deployment default model) is onboarded with that model.
        with runtime.transaction() as session:
            voice_row = session.get(Voice, voice_id)
            found = voice_model(session, runtime.settings, voice_row) if voice_row is not None else None
            model = ModelRef.of(found) if found is not None else None
        references = ReferenceClip.unpack(runtime.storage.get(work.upload_key))
        if not references:
            raise PermanentJobError("the voice has no reference clips", code="reference_missing")
        encoder = runtime.voice_encoder_for(model)
        features = encoder.encode(references, work.transcript, work.language)
        version = encoder.model_version if model is None else model.version
        name = f"features-{version}.npz" if model is None else features_object_name(model)
        key = voice_object_key(work.tenant_id, voice_id, name)
        runtime.storage.put(key, features.to_bytes(), "application/octet-stream")
    except Exception as exc:
        if is_transient(exc) and work.attempt < runtime.settings.task_max_attempts:
            raise retry_task(task, exc, work.attempt) from exc
        if not isinstance(exc, PermanentJobError):
            log.exception("voice processing failed")
        with runtime.transaction() as session:
            lifecycle.fail_voice(session, voice_id, error_code(exc), str(exc))
        return
    with runtime.transaction() as session:
        ready = lifecycle.voice_ready(session, voice_id, key, version)
        if ready and model is not None:
            record_features(session, voice_id, model, key)
    if not ready:
        # The voice was deleted (or finished by another attempt) while this one worked. A deleted
        # voice must not keep features; another attempt's features live under this same key.
        with runtime.transaction() as session:
            voice = session.get(Voice, voice_id)
            deleted = voice is not None and voice.status == VoiceStatus.DELETED.value
        if deleted:
            runtime.storage.delete(key)


def compute_voice_features(task: VoxmillTask, job_id: uuid.UUID) -> None:
    """The features of a queued job's voice for the job's model (its first job on that model),
    stored and recorded; then the job is planned again and goes on."""
    runtime = task.runtime
    bind_log_context(job_id=str(job_id), stage="voice_features")
    with runtime.transaction() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.QUEUED.value:
            return
        model = ModelRef.from_job(job)
        voice = session.get(Voice, job.voice_id)
        if (
            model is None
            or voice is None
            or voice.status != VoiceStatus.READY.value
            or voice.upload_key is None
            or features_key(session, voice.id, model.sovits_sha256) is not None
        ):
            after_commit(session, lambda: dispatch.plan_job(runtime, job_id))
            return
        work = (voice.id, voice.tenant_id, voice.upload_key, voice.transcript, voice.language)
    voice_id, tenant_id, upload_key, transcript, language = work
    try:
        references = ReferenceClip.unpack(runtime.storage.get(upload_key))
        features = runtime.voice_encoder_for(model).encode(references, transcript, language)
        key = voice_object_key(tenant_id, voice_id, features_object_name(model))
        runtime.storage.put(key, features.to_bytes(), "application/octet-stream")
    except Exception as exc:
        if is_transient(exc) and task.request.retries + 1 < runtime.settings.task_max_attempts:
            raise retry_task(task, exc, task.request.retries + 1) from exc
        if not isinstance(exc, PermanentJobError):
            log.exception("voice features failed")
        with runtime.transaction() as session:
            lifecycle.fail_job(session, runtime, job_id, JobStatus.QUEUED, error_code(exc), str(exc))
        return
    with runtime.transaction() as session:
        record_features(session, voice_id, model, key)
        after_commit(session, lambda: dispatch.plan_job(runtime, job_id))


def register(app: Celery) -> None:
    @bound_task(app, TaskName.SYNTHESIZE_WAVEFORM)
    def waveform_task(self: VoxmillTask, segment_id: str) -> str:
        return run_stage(self, Stage.SOVITS, segment_id, synthesize_waveform)

    @bound_task(app, TaskName.PROCESS_VOICE)
    def voice_task(self: VoxmillTask, voice_id: str) -> None:
        process_voice(self, uuid.UUID(voice_id))

    @bound_task(app, TaskName.VOICE_FEATURES)
    def voice_features_task(self: VoxmillTask, job_id: str) -> None:
        compute_voice_features(self, uuid.UUID(job_id))
