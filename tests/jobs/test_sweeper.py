"""The sweeper on PostgreSQL and Redis: after the broker lost its messages it sends again the
work that waits with no message and the work whose worker died past its deadline, and leaves
alone work a live worker holds and messages still queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from db.models import Job, Segment, WebhookDelivery, utcnow
from jobs import lifecycle
from jobs.lifecycle import StageClaim, StageOutput
from jobs.metrics import queue_depths
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.states import Stage
from jobs.sweeper import sweep
from tests.support import factories
from tests.support.services import drop_broker_keys, unique_broker_prefix


@pytest.fixture()
def runtime(fresh_pg_url: str, broker_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        mode="distributed",
        database_url=fresh_pg_url,
        broker_url=broker_url,
        broker_key_prefix=unique_broker_prefix(),
        storage="local",
        home=tmp_path,
        engine="tests.support.engine",
    )
    runtime = Runtime(settings)
    yield runtime
    drop_broker_keys(broker_url, settings.broker_key_prefix)
    runtime.close()


def advance(session: object, runtime: Runtime, segment_id: uuid.UUID, stages: list[Stage], last_running: bool) -> None:
    for i, stage in enumerate(stages):
        claim = lifecycle.claim_stage(session, runtime, segment_id, stage)  # type: ignore[arg-type]
        assert isinstance(claim, StageClaim)
        if last_running and i == len(stages) - 1:
            return
        key = {"gpt": "semantic_key", "sovits": "waveform_key", "post": "audio_key"}[stage.value]
        assert lifecycle.complete_stage(session, runtime, claim, StageOutput({key: "k"}))  # type: ignore[arg-type]


def test_sweeper_resends_lost_work_and_nothing_else(runtime: Runtime, broker_url: str) -> None:
    with runtime.transaction() as session:
        job = factories.running_job(session, runtime, ["Waits.", "Held.", "Orphaned.", "Queued."])
        waiting, held, orphaned, queued = session.scalars(
            select(Segment.id).where(Segment.job_id == job.id).order_by(Segment.index)
        ).all()
        advance(session, runtime, waiting, [Stage.GPT], last_running=False)  # gpt_done: waits for sovits
        advance(session, runtime, held, [Stage.GPT, Stage.SOVITS], last_running=True)  # a live sovits worker
        advance(session, runtime, orphaned, [Stage.GPT, Stage.SOVITS, Stage.POST], last_running=True)
        # Its post worker died long ago: the deadline has passed.
        session.execute(
            update(Segment).where(Segment.id == orphaned).values(stage_deadline_at=utcnow() - timedelta(seconds=5))
        )
        planned = factories.running_job(session, runtime, ["Other."]).id
        session.execute(update(Job).where(Job.id == planned).values(status="queued"))
        # A delivery whose attempt is in flight (leased) and one whose message was lost.
        for text in ("Third.", "Fourth."):
            other = factories.running_job(session, runtime, [text], callback_url="https://example.test/h").id
            lifecycle.cancel_job(session, runtime, other)
            session.flush()
        in_flight, lost = session.scalars(select(WebhookDelivery.id).order_by(WebhookDelivery.created_at)).all()
        assert lifecycle.claim_delivery(session, in_flight, lease_s=600) is not None
        # Everything above happened a while ago.
        past = utcnow() - timedelta(seconds=60)
        session.execute(update(Segment).values(updated_at=past))
        session.execute(update(Job).values(updated_at=past))
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == lost).values(next_attempt_at=past))
    # Redis restarted without persistence: every message is gone, every queue key with it.
    drop_broker_keys(broker_url, runtime.settings.broker_key_prefix)
    assert queue_depths(runtime) == {"gpt": 0, "sovits": 0, "post": 0}

    report = sweep(runtime, stale_after_s=30)
    assert set(report.segments) == {waiting, orphaned, queued}
    assert report.jobs_planned == [planned]
    assert report.deliveries == [lost]
    assert queue_depths(runtime) == {"gpt": 2, "sovits": 1, "post": 2}  # queued + plan; waiting; orphaned + delivery

    # While those messages wait in their queues, waiting work is not sent again.
    again = sweep(runtime, stale_after_s=30)
    assert waiting not in again.segments and queued not in again.segments and again.jobs_planned == []
    assert held not in again.segments
