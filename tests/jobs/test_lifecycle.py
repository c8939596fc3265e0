"""Guarded transitions on PostgreSQL: a redelivered or stale task changes nothing, attempts are
counted and capped, a job completes exactly once when its last segment does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Job, Segment, StateTransition, WebhookAttempt, WebhookDelivery, utcnow
from jobs import lifecycle
from jobs.lifecycle import ClaimRefused, StageClaim, StageOutput, TransitionError
from jobs.runtime import AFTER_COMMIT, Runtime
from jobs.states import DeliveryStatus, JobStatus, SegmentStatus, Stage
from jobs.storage import StoredObject
from tests.support import factories


def segments(session: Session, job: Job) -> list[Segment]:
    return list(
        session.scalars(
            select(Segment).where(Segment.job_id == job.id).order_by(Segment.index).execution_options(populate_existing=True)
        )
    )


def run_all_stages(session: Session, runtime: Runtime, segment_id: object) -> None:
    for stage in Stage:
        claim = lifecycle.claim_stage(session, runtime, segment_id, stage)  # type: ignore[arg-type]
        assert isinstance(claim, StageClaim)
        stored = StoredObject(f"k/{segment_id}/{stage.value}", 1, "0" * 64, "x")
        columns = {"audio_key": stored.key} if stage is Stage.POST else {}
        assert lifecycle.complete_stage(session, runtime, claim, StageOutput(columns, {stage.value: stored}))


def test_guarded_transition_happens_once(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One."])
    assert not lifecycle.transition_job(db_session, job.id, JobStatus.QUEUED, JobStatus.RUNNING)
    assert lifecycle.transition_job(db_session, job.id, JobStatus.RUNNING, JobStatus.CANCELLED)
    assert not lifecycle.transition_job(db_session, job.id, JobStatus.RUNNING, JobStatus.CANCELLED)
    with pytest.raises(TransitionError):
        lifecycle.transition_job(db_session, job.id, JobStatus.SUCCEEDED, JobStatus.RUNNING)
    recorded = db_session.scalar(
        select(func.count()).select_from(StateTransition).where(
            StateTransition.entity_id == job.id, StateTransition.to_status == "cancelled"
        )
    )
    assert recorded == 1


def test_redelivered_stage_is_harmless(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One."])
    (segment,) = segments(db_session, job)
    first = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT)
    assert isinstance(first, StageClaim) and first.attempt == 1
    # The message comes back (worker died): the running segment is re-claimed as attempt 2 ...
    second = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT)
    assert isinstance(second, StageClaim) and second.attempt == 2
    # ... and the first, stale attempt can no longer complete it.
    assert not lifecycle.complete_stage(db_session, pg_runtime, first, StageOutput())
    assert lifecycle.complete_stage(db_session, pg_runtime, second, StageOutput({"semantic_key": "k"}))
    # A redelivery after completion changes nothing and lets the chain continue.
    assert lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT) is ClaimRefused.ALREADY_DONE
    # A stage whose turn has not come is skipped.
    assert lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.POST) is ClaimRefused.SKIP
    (segment,) = segments(db_session, job)
    assert segment.status == SegmentStatus.GPT_DONE.value and segment.attempts == 0 and segment.total_attempts == 2


def test_attempts_are_capped(db_session: Session, pg_runtime: Runtime) -> None:
    pg_runtime.settings.task_max_attempts = 3
    job = factories.running_job(db_session, pg_runtime, ["One."])
    (segment,) = segments(db_session, job)
    for attempt in (1, 2, 3):
        claim = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT)
        assert isinstance(claim, StageClaim) and claim.attempt == attempt
    assert lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT) is ClaimRefused.SKIP
    (segment,) = segments(db_session, job)
    assert segment.status == "failed" and segment.error_code == "attempts_exhausted"
    db_session.refresh(job)
    assert job.status == "failed" and job.segments_failed == 1 and job.error_code == "segments_failed"


def test_job_moves_on_exactly_when_its_last_segment_finishes(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One.", "Two.", "Three."], callback_url="https://example.test/h")
    segs = segments(db_session, job)
    db_session.info.pop(AFTER_COMMIT, None)
    for i, segment in enumerate(segs):
        run_all_stages(db_session, pg_runtime, segment.id)
        db_session.refresh(job)
        assert job.segments_done == i + 1
        assert job.status == ("assembling" if i == len(segs) - 1 else "running")
    # The assembly was scheduled once, after commit.
    assert len(db_session.info.get(AFTER_COMMIT, [])) == 1
    work = lifecycle.claim_assembly(db_session, pg_runtime, job.id)
    assert work is not None and len(work.segment_audio_keys) == 3
    audio = StoredObject("jobs/x/audio.wav", 10, "1" * 64, "audio/wav")
    assert lifecycle.complete_job(db_session, pg_runtime, job.id, audio)
    assert not lifecycle.complete_job(db_session, pg_runtime, job.id, audio)
    db_session.refresh(job)
    assert job.status == "succeeded"
    deliveries = db_session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).all()
    assert [(d.event, d.status) for d in deliveries] == [("job.succeeded", "pending")]


def test_cancel_stops_segments_at_their_next_claim(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One.", "Two."])
    first, second = segments(db_session, job)
    claim = lifecycle.claim_stage(db_session, pg_runtime, first.id, Stage.GPT)
    assert isinstance(claim, StageClaim)
    assert lifecycle.cancel_job(db_session, pg_runtime, job.id)
    assert not lifecycle.cancel_job(db_session, pg_runtime, job.id)
    assert not lifecycle.complete_stage(db_session, pg_runtime, claim, StageOutput())
    assert lifecycle.claim_stage(db_session, pg_runtime, second.id, Stage.GPT) is ClaimRefused.SKIP
    assert {s.status for s in segments(db_session, job)} == {"cancelled"}


def test_failed_segment_fails_the_job_once_all_are_done(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One.", "Two."])
    first, second = segments(db_session, job)
    assert lifecycle.fail_segment(db_session, pg_runtime, first.id, "bad_input", "no")
    assert not lifecycle.fail_segment(db_session, pg_runtime, first.id, "bad_input", "no")
    db_session.refresh(job)
    assert job.status == "running"
    run_all_stages(db_session, pg_runtime, second.id)
    db_session.refresh(job)
    assert (job.status, job.segments_done, job.segments_failed) == ("failed", 1, 1)


def test_a_fresh_message_never_takes_a_segment_from_a_live_worker(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One."])
    (segment,) = segments(db_session, job)
    owner = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT)
    assert isinstance(owner, StageClaim) and owner.attempt == 1
    # A duplicate (a sweeper re-send, a repeated chain link) leaves it to the live attempt ...
    assert lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT, take_over=False) is ClaimRefused.SKIP
    # ... a redelivery (its worker died) takes it over ...
    second = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT, take_over=True)
    assert isinstance(second, StageClaim) and second.attempt == 2
    # ... and so does anyone once the attempt's deadline has passed.
    db_session.execute(
        update(Segment).where(Segment.id == segment.id).values(stage_deadline_at=utcnow() - timedelta(seconds=1))
    )
    third = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT, take_over=False)
    assert isinstance(third, StageClaim) and third.attempt == 3
    assert not lifecycle.complete_stage(db_session, pg_runtime, second, StageOutput())
    assert lifecycle.complete_stage(db_session, pg_runtime, third, StageOutput({"semantic_key": "k"}))


def test_a_delivery_in_flight_is_not_sent_again(db_session: Session, pg_runtime: Runtime) -> None:
    job = factories.running_job(db_session, pg_runtime, ["One."], callback_url="https://example.test/h")
    assert lifecycle.cancel_job(db_session, pg_runtime, job.id)
    delivery = db_session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).one()
    first = lifecycle.claim_delivery(db_session, delivery.id, lease_s=60, take_over=False)
    assert first is not None and first.attempt == 1
    # While the attempt is in flight its lease keeps duplicates (and the sweeper) away ...
    assert lifecycle.claim_delivery(db_session, delivery.id, lease_s=60, take_over=False) is None
    db_session.refresh(delivery)
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at > utcnow() + timedelta(seconds=50)
    # ... except a redelivery of the message whose worker died mid-attempt.
    again = lifecycle.claim_delivery(db_session, delivery.id, lease_s=60, take_over=True)
    assert again is not None and again.attempt == 2


def test_a_delivery_attempt_whose_guard_matched_no_row_records_no_transition(
    db_session: Session, pg_runtime: Runtime
) -> None:
    """Two attempts of one delivery finish (a duplicate that took over): only the first moves the
    delivery; the second's guarded update matches no row and must not log a state change."""
    job = factories.running_job(db_session, pg_runtime, ["One."], callback_url="https://example.test/h")
    assert lifecycle.cancel_job(db_session, pg_runtime, job.id)
    delivery = db_session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).one()
    first = lifecycle.claim_delivery(db_session, delivery.id, lease_s=60)
    second = lifecycle.claim_delivery(db_session, delivery.id, lease_s=60, take_over=True)
    assert first is not None and second is not None
    outcome = dict(duration_ms=1.0, status_code=200, error=None, succeeded=True, retry_at=None)
    assert lifecycle.record_delivery_attempt(db_session, second, **outcome) is DeliveryStatus.DELIVERED  # type: ignore[arg-type]
    late = lifecycle.record_delivery_attempt(db_session, first, **outcome)  # type: ignore[arg-type]
    assert late is None
    changes = db_session.scalars(
        select(StateTransition).where(StateTransition.entity_id == delivery.id)
    ).all()
    assert [(c.from_status, c.to_status, c.attempt) for c in changes] == [("pending", "delivered", 2)]
    assert len(db_session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)).all()) == 2
