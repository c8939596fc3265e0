"""The states of jobs, segments, voices and webhook deliveries, and which changes are legal.
Changes themselves are made in ``jobs.lifecycle``, nowhere else."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    QUEUED = "queued"
    """Row written and committed; the planning task has not split it into segments yet."""
    RUNNING = "running"
    """Segments exist and are moving through the gpt → sovits → post chains."""
    ASSEMBLING = "assembling"
    """Every segment finished; the job's audio is being assembled and stored."""
    SUCCEEDED = "succeeded"
    """The job's audio is stored and verified. Terminal."""
    FAILED = "failed"
    """A segment failed for good, or the input was rejected. Terminal."""
    CANCELLED = "cancelled"
    """Cancelled by the client; running segments stop at their next stage. Terminal."""


class SegmentStatus(str, Enum):
    QUEUED = "queued"
    """Created by planning; its chain has been (or will be) enqueued on ``gpt``."""
    GPT_RUNNING = "gpt_running"
    """A gpt worker claimed it: text → semantic tokens."""
    GPT_DONE = "gpt_done"
    """Semantic tokens are stored; waiting for a sovits worker."""
    SOVITS_RUNNING = "sovits_running"
    """A sovits worker claimed it: semantic tokens + voice → waveform."""
    SOVITS_DONE = "sovits_done"
    """The raw waveform is stored; waiting for a post worker."""
    POST_RUNNING = "post_running"
    """A post worker claimed it: loudness, encoding, storage, quality scores. A render below the
    quality gate goes back to ``queued`` with the next render's seed."""
    SUCCEEDED = "succeeded"
    """Finished audio stored and verified — or, created so by planning, a finished render of
    the same content key reused from the render cache. Terminal."""
    FAILED = "failed"
    """Permanent error or attempts exhausted. Terminal."""
    CANCELLED = "cancelled"
    """Its job was cancelled before it finished. Terminal."""


class VoiceStatus(str, Enum):
    PENDING = "pending"
    """Reference uploaded; features not computed yet."""
    PROCESSING = "processing"
    """A sovits worker is computing the voice's features."""
    READY = "ready"
    """Features stored; jobs may use the voice."""
    FAILED = "failed"
    """The reference was rejected or processing failed for good; see failure_code."""
    DELETED = "deleted"
    """Deleted by the client; its stored features are gone. Rendered jobs keep their audio."""


class DeliveryStatus(str, Enum):
    PENDING = "pending"
    """Not delivered yet; the next attempt is scheduled at next_attempt_at."""
    DELIVERED = "delivered"
    """The receiver answered 2xx. Terminal."""
    FAILED = "failed"
    """Every attempt failed. Terminal."""


class Stage(str, Enum):
    """The three per-segment stages, in chain order; each is also its queue's name."""

    GPT = "gpt"
    SOVITS = "sovits"
    POST = "post"

    @property
    def waiting(self) -> SegmentStatus:
        return _STAGE_STATES[self][0]

    @property
    def running(self) -> SegmentStatus:
        return _STAGE_STATES[self][1]

    @property
    def done(self) -> SegmentStatus:
        return _STAGE_STATES[self][2]


_STAGE_STATES: dict[Stage, tuple[SegmentStatus, SegmentStatus, SegmentStatus]] = {
    Stage.GPT: (SegmentStatus.QUEUED, SegmentStatus.GPT_RUNNING, SegmentStatus.GPT_DONE),
    Stage.SOVITS: (SegmentStatus.GPT_DONE, SegmentStatus.SOVITS_RUNNING, SegmentStatus.SOVITS_DONE),
    Stage.POST: (SegmentStatus.SOVITS_DONE, SegmentStatus.POST_RUNNING, SegmentStatus.SUCCEEDED),
}

SEGMENT_ORDER: list[SegmentStatus] = [
    SegmentStatus.QUEUED,
    SegmentStatus.GPT_RUNNING,
    SegmentStatus.GPT_DONE,
    SegmentStatus.SOVITS_RUNNING,
    SegmentStatus.SOVITS_DONE,
    SegmentStatus.POST_RUNNING,
    SegmentStatus.SUCCEEDED,
]

JOB_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
SEGMENT_TERMINAL = frozenset({SegmentStatus.SUCCEEDED, SegmentStatus.FAILED, SegmentStatus.CANCELLED})

JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.ASSEMBLING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.ASSEMBLING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

def _segment_transitions() -> dict[SegmentStatus, frozenset[SegmentStatus]]:
    allowed: dict[SegmentStatus, set[SegmentStatus]] = {s: set() for s in SegmentStatus}
    for stage in Stage:
        allowed[stage.waiting].add(stage.running)  # a worker claims the segment
        allowed[stage.running].add(stage.running)  # a redelivered task re-claims it
        allowed[stage.running].add(stage.done)
    # The quality gate rejected the render: the whole chain runs again with a new seed.
    allowed[SegmentStatus.POST_RUNNING].add(SegmentStatus.QUEUED)
    for status in SegmentStatus:
        if status not in SEGMENT_TERMINAL:
            allowed[status] |= {SegmentStatus.FAILED, SegmentStatus.CANCELLED}
    return {status: frozenset(to) for status, to in allowed.items()}


SEGMENT_TRANSITIONS = _segment_transitions()

VOICE_TRANSITIONS: dict[VoiceStatus, frozenset[VoiceStatus]] = {
    VoiceStatus.PENDING: frozenset({VoiceStatus.PROCESSING, VoiceStatus.FAILED, VoiceStatus.DELETED}),
    VoiceStatus.PROCESSING: frozenset(
        {VoiceStatus.PROCESSING, VoiceStatus.READY, VoiceStatus.FAILED, VoiceStatus.DELETED}
    ),
    VoiceStatus.READY: frozenset({VoiceStatus.DELETED}),
    VoiceStatus.FAILED: frozenset({VoiceStatus.DELETED}),
    VoiceStatus.DELETED: frozenset(),
}
