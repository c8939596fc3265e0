"""A stage that keeps failing transiently is retried up to voxmill's attempt cap — counted in
the database, not by Celery, whose own default of three retries used to drop the fourth and
leave the segment running until its deadline — and then fails its job visibly, webhook and all.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from db.models import Job, Segment, WebhookDelivery
from tests.support.faults import FaultRun, TcpProxy
from tests.support.services import wait_for

RunFactory = Callable[..., FaultRun]


def test_transient_failures_end_at_the_attempt_cap_not_in_a_hang(
    fault_run: RunFactory, fault_s3: tuple[object, TcpProxy]
) -> None:
    # No in-process storage retry: every stage attempt meets the outage on its own.
    run = fault_run("retry cap", VOXMILL_TASK_MAX_ATTEMPTS="6", VOXMILL_STORAGE_RETRY_DEADLINE_S="0")
    _, proxy = fault_s3
    proxy.stop()
    try:
        submission = run.submissions[0]
        run.submit(submission)

        def failed() -> bool:
            with run.db.connect() as conn:
                return conn.execute(select(Job.status).where(Job.id == submission.job_id)).scalar_one() == "failed"

        wait_for(failed, 120, "the job to fail")
    finally:
        proxy.start()
    with run.db.connect() as conn:
        job = conn.execute(select(Job).where(Job.id == submission.job_id)).one()
        segments = conn.execute(select(Segment).where(Segment.job_id == submission.job_id)).all()
    assert job.error_code == "segments_failed"
    assert {(s.status, s.error_code) for s in segments} == {("failed", "storage_unavailable")}
    assert {s.total_attempts for s in segments} == {6}

    def notified() -> bool:
        with run.db.connect() as conn:
            rows = conn.execute(select(WebhookDelivery.event, WebhookDelivery.status)).all()
        return [tuple(r) for r in rows] == [("job.failed", "delivered")]

    wait_for(notified, 60, "the job.failed webhook")
