"""The sweeper (Celery beat, every 30 s): finds work whose message was lost — a worker died after
its deadline passed, Redis restarted without persistence, an enqueue failed after its commit —
and enqueues it again. Redelivered work is harmless (guarded transitions), and the attempt cap
still bounds it, so no job hangs forever and none loops forever.

Waiting work is re-sent only when its queue is empty: a segment that waits behind ten thousand
others in a deep queue is not lost, and re-sending it would only add duplicates."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import or_, select

from db.models import Job, Segment, Voice, WebhookDelivery, utcnow
from jobs import dispatch
from jobs.celery_app import TaskName, VoxmillTask, bound_task
from jobs.metrics import queue_depths
from jobs.runtime import Runtime
from jobs.states import DeliveryStatus, JobStatus, SegmentStatus, Stage, VoiceStatus

log = logging.getLogger("voxmill.sweeper")

WAITING = {stage.waiting: stage for stage in Stage}
RUNNING = {stage.running: stage for stage in Stage}


@dataclass
class SweepReport:
    segments: list[uuid.UUID] = field(default_factory=list)
    jobs_planned: list[uuid.UUID] = field(default_factory=list)
    jobs_assembled: list[uuid.UUID] = field(default_factory=list)
    voices: list[uuid.UUID] = field(default_factory=list)
    deliveries: list[uuid.UUID] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(map(len, (self.segments, self.jobs_planned, self.jobs_assembled, self.voices, self.deliveries)))


def sweep(runtime: Runtime, stale_after_s: float | None = None, limit: int = 500) -> SweepReport:
    settings = runtime.settings
    stale_after = timedelta(seconds=stale_after_s if stale_after_s is not None else settings.sweep_stale_after_s)
    now = utcnow()
    stale = now - stale_after
    depths = {q: 0 for q in ("gpt", "sovits", "post")} if settings.embedded else queue_depths(runtime)
    report = SweepReport()

    with runtime.transaction() as session:
        waiting_statuses = [s.value for s, stage in WAITING.items() if depths[stage.value] == 0]
        segments = session.execute(
            select(Segment.id, Segment.status)
            .join(Job, Segment.job_id == Job.id)
            .where(
                Job.status == JobStatus.RUNNING.value,
                or_(
                    (Segment.status.in_(waiting_statuses) & (Segment.updated_at < stale)),
                    (Segment.status.in_([s.value for s in RUNNING]) & (Segment.stage_deadline_at < now)),
                ),
            )
            .limit(limit)
        ).all()
        planned = session.scalars(
            select(Job.id).where(Job.status == JobStatus.QUEUED.value, Job.updated_at < stale).limit(limit)
        ).all() if depths["gpt"] == 0 else []
        assembling = session.scalars(
            select(Job.id).where(Job.status == JobStatus.ASSEMBLING.value, Job.updated_at < stale).limit(limit)
        ).all() if depths["post"] == 0 else []
        voices = session.scalars(
            select(Voice.id).where(
                Voice.status.in_([VoiceStatus.PENDING.value, VoiceStatus.PROCESSING.value]),
                Voice.updated_at < stale,
            ).limit(limit)
        ).all()
        deliveries = session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.status == DeliveryStatus.PENDING.value,
                WebhookDelivery.next_attempt_at < stale,
            ).limit(limit)
        ).all()

    for segment_id, status in segments:
        status = SegmentStatus(status)
        stage = WAITING.get(status) or RUNNING[status]
        dispatch.segment_chain(runtime, segment_id, start=stage)
        report.segments.append(segment_id)
    for job_id in planned:
        dispatch.plan_job(runtime, job_id)
        report.jobs_planned.append(job_id)
    for job_id in assembling:
        dispatch.assemble_job(runtime, job_id)
        report.jobs_assembled.append(job_id)
    for voice_id in voices:
        dispatch.process_voice(runtime, voice_id)
        report.voices.append(voice_id)
    for delivery_id in deliveries:
        dispatch.deliver_webhook(runtime, delivery_id)
        report.deliveries.append(delivery_id)
    if report.total:
        log.warning(
            "sweeper re-enqueued lost work",
            extra={"fields": {k: len(v) for k, v in report.__dict__.items()}},
        )
    return report


def register(app: Celery) -> None:
    @bound_task(app, TaskName.SWEEP)
    def sweep_task(self: VoxmillTask) -> int:
        return sweep(self.runtime).total
