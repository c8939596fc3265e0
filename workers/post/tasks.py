"""The post queue's tasks: finishing a segment (DC removed, denoise, loudness to the job's target, a
lossless stored copy, quality scores for the gate) and assembling a job's audio from its finished
segments (levelled as one chapter, then through the delivery loop of ``audio.pipeline``: encoded
in the job's format, decoded and measured, corrected until it meets the target, or the job fails
with ``loudness_unmet``)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import numpy as np
from celery import Celery

from jobs import lifecycle, metrics
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.engine import SynthesisParams, Waveform
from jobs.errors import PermanentJobError
from jobs.keys import job_object_key, segment_object_key
from jobs.lifecycle import StageClaim, StageOutput
from jobs.logs import bind_log_context
from jobs.retrying import write_with_retry
from jobs.runtime import Runtime
from jobs.stages import error_code, is_transient, retry_task, run_stage
from jobs.states import JobStatus, Stage
from jobs.storage import StoredObject
from workers.post.audio import LoudnessTarget, encode, finish, normalize
from workers.post.audio.loudness import remove_dc
from workers.post.audio.pipeline import SEGMENT_GAP_S, LoudnessUnmet

log = logging.getLogger("voxmill.post")

# The job's format names → the encoder's. Segments are kept as 24-bit FLAC: lossless, half the
# size of float WAV, and what chapter assembly reads back.
FORMAT_NAMES = {"wav": "wav16", "wav24": "wav24", "flac": "flac", "mp3": "mp3", "opus": "opus", "m4a": "m4a"}
SEGMENT_FORMAT = "flac24"


def loudness_target(params: SynthesisParams) -> LoudnessTarget:
    spec: dict[str, Any] = {"preset": params.loudness_preset}
    if params.loudness_lufs is not None:
        spec["integrated_lufs"] = params.loudness_lufs
    if params.true_peak_dbtp is not None:
        spec["true_peak_dbtp"] = params.true_peak_dbtp
    try:
        return LoudnessTarget.from_dict(spec)
    except ValueError as exc:
        raise PermanentJobError(str(exc), code="invalid_loudness") from exc


def finish_segment(runtime: Runtime, claim: StageClaim) -> StageOutput:
    if claim.waveform_key is None:
        raise PermanentJobError("the waveform is missing", code="missing_waveform")
    raw = Waveform.from_audio_bytes(runtime.storage.get(claim.waveform_key))
    samples = remove_dc(raw.samples, raw.sample_rate)
    if claim.params.denoise:
        from workers.post.audio.denoise import denoise

        samples = denoise(samples, raw.sample_rate)
    levelled = normalize(samples, raw.sample_rate, loudness_target(claim.params))
    key = segment_object_key(claim.tenant_id, claim.content_key, "audio.flac")
    data = encode(levelled.samples, raw.sample_rate, SEGMENT_FORMAT)
    stored = runtime.storage.put(key, data, "audio/flac")
    quality = None
    if runtime.settings.quality_gate != "off":
        from workers.post.gate import score_render

        quality = score_render(runtime, claim, levelled.samples, raw.sample_rate)
    log.info(
        "segment finished",
        extra={
            "fields": {
                "duration_s": round(len(levelled.samples) / raw.sample_rate, 3),
                "seed": claim.params.seed,
                **(
                    {
                        "dnsmos": quality.dnsmos,
                        "similarity": quality.similarity,
                        "quality_passed": quality.passed,
                        "quality_verdict": quality.verdict,
                        "stop_reason": quality.stop_reason,
                        "quality_failures": list(quality.failures),
                    }
                    if quality is not None
                    else {}
                ),
            }
        },
    )
    return StageOutput(
        columns={"audio_key": key, "duration_s": len(levelled.samples) / raw.sample_rate},
        artifacts={"audio": stored},
        quality=quality,
    )


def assemble_audio(runtime: Runtime, work: lifecycle.AssemblyWork) -> StoredObject:
    parts = [Waveform.from_audio_bytes(runtime.storage.get(key)) for key in work.segment_audio_keys]
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise PermanentJobError("segments have different sample rates", code="inconsistent_segments")
    segments: list[np.ndarray] = [p.samples for p in parts]
    finished = finish(
        segments,
        rate,
        FORMAT_NAMES[work.output_format],
        loudness_target(work.params),
        target_rate=work.sample_rate,
        gap_s=SEGMENT_GAP_S,
    )
    log.info("job audio delivered", extra={"fields": {"encodes": finished.encodes, **finished.report.to_dict()}})
    key = job_object_key(work.tenant_id, work.job_id, f"audio{finished.extension}")
    return runtime.storage.put(key, finished.data, finished.mime)


def assemble(task: VoxmillTask, job_id: uuid.UUID) -> None:
    runtime = task.runtime
    bind_log_context(job_id=str(job_id), stage="assemble")
    work = write_with_retry(
        runtime, lambda session: lifecycle.claim_assembly(session, runtime, job_id), "claim of an assembly"
    )
    if work is None:
        return
    extra: dict[str, StoredObject] = {}
    try:
        with metrics.timed("assemble"):
            if work.book is not None:
                from workers.post.book import assemble_book

                outputs = assemble_book(runtime, work, loudness_target(work.params))
                stored, extra = outputs.audio, outputs.extra
            else:
                stored = assemble_audio(runtime, work)
    except LoudnessUnmet as exc:
        log.warning("delivery missed its loudness target", extra={"fields": exc.report.to_dict()})
        with runtime.transaction() as session:
            lifecycle.fail_job(session, runtime, job_id, JobStatus.ASSEMBLING, "loudness_unmet", str(exc))
        return
    except Exception as exc:
        if is_transient(exc) and work.attempt < runtime.settings.task_max_attempts:
            raise retry_task(task, exc, work.attempt) from exc
        if not isinstance(exc, PermanentJobError):
            log.exception("assembly failed")
        with runtime.transaction() as session:
            lifecycle.fail_job(session, runtime, job_id, JobStatus.ASSEMBLING, error_code(exc), str(exc))
        return
    # The audio is stored and verified: record it through a database outage, do not redo it.
    write_with_retry(
        runtime, lambda session: lifecycle.complete_job(session, runtime, job_id, stored, extra), "record of a job"
    )


def register(app: Celery) -> None:
    @bound_task(app, TaskName.FINISH_SEGMENT)
    def finish_task(self: VoxmillTask, segment_id: str) -> str:
        return run_stage(self, Stage.POST, segment_id, finish_segment)

    @bound_task(app, TaskName.ASSEMBLE_JOB)
    def assemble_task(self: VoxmillTask, job_id: str) -> None:
        assemble(self, uuid.UUID(job_id))
