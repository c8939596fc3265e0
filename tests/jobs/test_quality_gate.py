"""The quality gate's state change on PostgreSQL: a render below the gate sends the segment back to
``queued`` with the next render's seed and the chain enqueued after commit, every render is
recorded, and after ``quality_max_rerenders`` the segment finishes anyway and its job reports it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Job, RenderAttempt, Segment, StateTransition, WebhookDelivery
from jobs import lifecycle
from jobs.lifecycle import StageClaim, StageOutput
from jobs.quality import CAP_FAILURE, RenderQuality, evaluate, render_seed, should_rerender
from jobs.runtime import AFTER_COMMIT, Runtime
from jobs.states import SegmentStatus, Stage
from jobs.storage import StoredObject
from tests.support import factories

BAD = {"sig": 1.2, "bak": 1.1, "ovrl": 1.05, "p808": 2.0}
GOOD = {"sig": 3.6, "bak": 4.1, "ovrl": 3.3, "p808": 3.9}


def render_once(session: Session, runtime: Runtime, segment_id: object, dnsmos: dict[str, float]) -> StageClaim:
    """gpt → sovits → post for the segment's current render; the post stage reports ``dnsmos``."""
    for stage in (Stage.GPT, Stage.SOVITS):
        claim = lifecycle.claim_stage(session, runtime, segment_id, stage)  # type: ignore[arg-type]
        assert isinstance(claim, StageClaim)
        assert lifecycle.complete_stage(session, runtime, claim, StageOutput())
    post = lifecycle.claim_stage(session, runtime, segment_id, Stage.POST)  # type: ignore[arg-type]
    assert isinstance(post, StageClaim)
    stored = StoredObject(f"k/{segment_id}/audio.flac", 1, "0" * 64, "audio/flac")
    quality = evaluate(runtime.settings, dnsmos, 0.8)
    assert lifecycle.complete_stage(
        session, runtime, post, StageOutput({"audio_key": stored.key}, {"audio": stored}, quality)
    )
    return post


def test_rule_and_seeds(pg_runtime: Runtime) -> None:
    settings = pg_runtime.settings
    settings.quality_gate, settings.quality_max_rerenders = "enforce", 2
    bad = evaluate(settings, BAD, 0.9)
    assert not bad.passed and bad.failures == (f"dnsmos_ovrl 1.05 < {settings.quality_min_dnsmos_ovrl:g}",)
    assert evaluate(settings, GOOD, 0.2).failures == (f"similarity 0.20 < {settings.quality_min_similarity:g}",)
    unmeasured = evaluate(settings, GOOD, None, ("similarity not scored: no reference",))
    assert unmeasured.passed and unmeasured.notes and unmeasured.verdict == "passed"
    # A scorer that raised, or nothing measured at all: unscored, which is no pass.
    broken = evaluate(settings, GOOD, None, faults=("similarity not scored: RuntimeError: boom",))
    assert (broken.verdict, broken.passed) == ("unscored", False)
    assert evaluate(settings, None, None, ("dnsmos not scored: empty",)).verdict == "unscored"
    assert [should_rerender(settings, n, broken) for n in (1, 2, 3)] == [True, True, False]
    # T2S ran into its token cap: a failure whatever the scores say.
    capped = evaluate(settings, GOOD, 0.9, stop_reason="cap")
    assert capped.verdict == "failed" and capped.failures == (CAP_FAILURE,)
    assert evaluate(settings, GOOD, 0.9, stop_reason="eos").passed
    assert RenderQuality.from_dict(capped.as_dict()) == capped
    assert [should_rerender(settings, n, bad) for n in (1, 2, 3)] == [True, True, False]
    settings.quality_gate = "score"
    assert not should_rerender(settings, 1, bad)
    assert [render_seed(7, n) for n in (1, 2, 3)] == [7, 8, 9]
    assert render_seed(2**31 - 1, 2) == 0


def test_rejected_render_goes_back_with_the_next_seed_until_the_limit(
    db_session: Session, pg_runtime: Runtime
) -> None:
    pg_runtime.settings.quality_gate = "enforce"
    pg_runtime.settings.quality_max_rerenders = 2
    job = factories.running_job(db_session, pg_runtime, ["Fine.", "Never good."])
    fine, hopeless = db_session.scalars(
        select(Segment).where(Segment.job_id == job.id).order_by(Segment.index)
    ).all()
    db_session.info.pop(AFTER_COMMIT, None)

    first = render_once(db_session, pg_runtime, hopeless.id, BAD)
    assert first.render_attempt == 1 and first.params.seed == 0
    db_session.refresh(hopeless)
    assert (hopeless.status, hopeless.render_attempt, hopeless.attempts) == ("queued", 2, 0)
    assert hopeless.quality_passed is False
    assert len(db_session.info.pop(AFTER_COMMIT, [])) == 1  # the chain, enqueued after commit

    second = render_once(db_session, pg_runtime, hopeless.id, BAD)
    assert second.render_attempt == 2 and second.params.seed == 1
    third = render_once(db_session, pg_runtime, hopeless.id, BAD)
    assert third.render_attempt == 3 and third.params.seed == 2
    db_session.refresh(hopeless)
    # The limit: the third render is kept, below the gate, and the segment counts as done.
    assert (hopeless.status, hopeless.render_attempt, hopeless.quality_passed) == ("succeeded", 3, False)

    render_once(db_session, pg_runtime, fine.id, GOOD)
    db_session.refresh(job)
    assert (job.status, job.segments_done) == ("assembling", 2)
    assert lifecycle.segments_below_gate(db_session, job.id) == [1]

    rows = db_session.scalars(
        select(RenderAttempt).where(RenderAttempt.job_id == job.id).order_by(RenderAttempt.segment_id, RenderAttempt.attempt)
    ).all()
    by_segment = {s: [(r.attempt, r.seed, r.passed) for r in rows if r.segment_id == s] for s in (fine.id, hopeless.id)}
    assert by_segment == {fine.id: [(1, 0, True)], hopeless.id: [(1, 0, False), (2, 1, False), (3, 2, False)]}
    assert all(r.dnsmos_ovrl is not None and r.similarity == 0.8 for r in rows)
    sent_back = db_session.scalars(
        select(StateTransition).where(
            StateTransition.entity_id == hopeless.id,
            StateTransition.from_status == SegmentStatus.POST_RUNNING.value,
            StateTransition.to_status == SegmentStatus.QUEUED.value,
        )
    ).all()
    assert len(sent_back) == 2


def test_a_stale_post_attempt_cannot_send_the_segment_back(db_session: Session, pg_runtime: Runtime) -> None:
    pg_runtime.settings.quality_gate = "enforce"
    job = factories.running_job(db_session, pg_runtime, ["Once."])
    segment = db_session.scalars(select(Segment).where(Segment.job_id == job.id)).one()
    for stage in (Stage.GPT, Stage.SOVITS):
        claim = lifecycle.claim_stage(db_session, pg_runtime, segment.id, stage)
        assert isinstance(claim, StageClaim) and lifecycle.complete_stage(db_session, pg_runtime, claim, StageOutput())
    stale = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.POST)
    current = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.POST)  # redelivered
    assert isinstance(stale, StageClaim) and isinstance(current, StageClaim)
    bad = evaluate(pg_runtime.settings, BAD, None)
    assert not lifecycle.complete_stage(db_session, pg_runtime, stale, StageOutput(quality=bad))
    assert db_session.scalars(select(RenderAttempt).where(RenderAttempt.job_id == job.id)).all() == []
    assert lifecycle.complete_stage(db_session, pg_runtime, current, StageOutput(quality=bad))
    db_session.refresh(segment)
    assert (segment.status, segment.render_attempt) == ("queued", 2)
    assert db_session.get(Job, job.id).status == "running"  # type: ignore[union-attr]


def test_the_webhook_payload_names_capped_and_unscored_segments(db_session: Session, pg_runtime: Runtime) -> None:
    pg_runtime.settings.quality_gate = "score"
    job = factories.running_job(db_session, pg_runtime, ["Fine.", "Runaway.", "Unjudged."], callback_url="https://example.test/h")
    fine, runaway, unjudged = db_session.scalars(
        select(Segment).where(Segment.job_id == job.id).order_by(Segment.index)
    ).all()
    for segment, stop, faults in ((fine, "eos", ()), (runaway, "cap", ()), (unjudged, "eos", ("dnsmos: RuntimeError",))):
        gpt = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.GPT)
        assert isinstance(gpt, StageClaim)
        assert lifecycle.complete_stage(db_session, pg_runtime, gpt, StageOutput({"stop_reason": stop}))
        sovits = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.SOVITS)
        assert isinstance(sovits, StageClaim) and lifecycle.complete_stage(db_session, pg_runtime, sovits, StageOutput())
        post = lifecycle.claim_stage(db_session, pg_runtime, segment.id, Stage.POST)
        assert isinstance(post, StageClaim) and post.stop_reason == stop
        quality = evaluate(pg_runtime.settings, GOOD, 0.8, faults=faults, stop_reason=post.stop_reason)
        stored = StoredObject(f"k/{segment.id}/audio.flac", 1, "0" * 64, "audio/flac")
        assert lifecycle.complete_stage(db_session, pg_runtime, post, StageOutput({"audio_key": stored.key}, {"audio": stored}, quality))
    assert lifecycle.complete_job(db_session, pg_runtime, job.id, StoredObject("k/job.wav", 1, "0" * 64, "audio/wav"))
    delivery = db_session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job.id)).one()
    reported = delivery.payload["job"]
    assert reported["segments_below_quality_gate"] == [1, 2]
    assert (reported["segments_t2s_cap"], reported["segments_unscored"]) == ([1], [2])
    verdicts = db_session.execute(
        select(RenderAttempt.verdict, RenderAttempt.stop_reason).where(RenderAttempt.job_id == job.id).order_by(RenderAttempt.id)
    ).all()
    assert [tuple(v) for v in verdicts] == [("passed", "eos"), ("failed", "cap"), ("unscored", "eos")]
