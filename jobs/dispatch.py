"""Enqueueing: every message voxmill sends is built here, by task name, so routing stays in
``jobs.celery_app`` and no module imports a worker to enqueue its task. Called only from
after-commit callbacks (``jobs.lifecycle``) and the sweeper."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from celery import chain

from jobs.celery_app import TaskName
from jobs.states import Stage

if TYPE_CHECKING:
    from jobs.runtime import Runtime


def plan_job(runtime: "Runtime", job_id: uuid.UUID) -> None:
    runtime.celery.signature(TaskName.PLAN_JOB.value, args=(str(job_id),)).apply_async()


STAGE_TASKS = {
    Stage.GPT: TaskName.SYNTHESIZE_SEMANTIC,
    Stage.SOVITS: TaskName.SYNTHESIZE_WAVEFORM,
    Stage.POST: TaskName.FINISH_SEGMENT,
}


def segment_chain(runtime: "Runtime", segment_id: uuid.UUID, start: Stage = Stage.GPT) -> None:
    """gpt → sovits → post for one segment (or its remaining stages from ``start``); each task
    passes the segment id to the next."""
    app = runtime.celery
    stages = list(Stage)[list(Stage).index(start) :]
    first, *rest = (app.signature(STAGE_TASKS[stage].value) for stage in stages)
    chain(first.clone(args=(str(segment_id),)), *rest).apply_async()


def assemble_job(runtime: "Runtime", job_id: uuid.UUID) -> None:
    runtime.celery.signature(TaskName.ASSEMBLE_JOB.value, args=(str(job_id),)).apply_async()


def process_voice(runtime: "Runtime", voice_id: uuid.UUID) -> None:
    runtime.celery.signature(TaskName.PROCESS_VOICE.value, args=(str(voice_id),)).apply_async()


def voice_features(runtime: "Runtime", job_id: uuid.UUID) -> None:
    """Compute the features of a job's voice for the job's model, then plan the job again."""
    runtime.celery.signature(TaskName.VOICE_FEATURES.value, args=(str(job_id),)).apply_async()


def deliver_webhook(runtime: "Runtime", delivery_id: uuid.UUID, countdown_s: float = 0.0) -> None:
    runtime.celery.signature(TaskName.DELIVER_WEBHOOK.value, args=(str(delivery_id),)).apply_async(
        countdown=countdown_s or None
    )
