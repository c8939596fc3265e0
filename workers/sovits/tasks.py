"""The sovits queue's tasks: semantic tokens → waveform, and voice onboarding (reference audio →
stored features). Each process loads its models once, on first use."""

from __future__ import annotations

import logging
import uuid

from celery import Celery

from db.models import Voice
from jobs import lifecycle
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.engine import ReferenceClip, SemanticTokens
from jobs.errors import PermanentJobError
from jobs.keys import segment_object_key, voice_object_key
from jobs.lifecycle import StageClaim, StageOutput
from jobs.logs import bind_log_context
from jobs.runtime import Runtime
from jobs.stages import error_code, is_transient, retry_task, run_stage
from jobs.states import Stage, VoiceStatus
from jobs.voices import voice_features

log = logging.getLogger("voxmill.sovits")


def synthesize_waveform(runtime: Runtime, claim: StageClaim) -> StageOutput:
    if claim.semantic_key is None:
        raise PermanentJobError("semantic tokens are missing", code="missing_semantic")
    voice = voice_features(runtime, claim)
    semantic = SemanticTokens.from_bytes(runtime.storage.get(claim.semantic_key))
    waveform = runtime.acoustic_engine.synthesize(semantic, voice, claim.params)
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
        references = ReferenceClip.unpack(runtime.storage.get(work.upload_key))
        if not references:
            raise PermanentJobError("the voice has no reference clips", code="reference_missing")
        features = runtime.voice_encoder.encode(references, work.transcript, work.language)
        key = voice_object_key(work.tenant_id, voice_id, f"features-{runtime.voice_encoder.model_version}.npz")
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
        ready = lifecycle.voice_ready(session, voice_id, key, runtime.voice_encoder.model_version)
    if not ready:
        # The voice was deleted (or finished by another attempt) while this one worked. A deleted
        # voice must not keep features; another attempt's features live under this same key.
        with runtime.transaction() as session:
            voice = session.get(Voice, voice_id)
            deleted = voice is not None and voice.status == VoiceStatus.DELETED.value
        if deleted:
            runtime.storage.delete(key)


def register(app: Celery) -> None:
    @bound_task(app, TaskName.SYNTHESIZE_WAVEFORM)
    def waveform_task(self: VoxmillTask, segment_id: str) -> str:
        return run_stage(self, Stage.SOVITS, segment_id, synthesize_waveform)

    @bound_task(app, TaskName.PROCESS_VOICE)
    def voice_task(self: VoxmillTask, voice_id: str) -> None:
        process_voice(self, uuid.UUID(voice_id))
