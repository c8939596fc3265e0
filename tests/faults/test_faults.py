"""Fifty jobs through real processes while something breaks; every job must end ``succeeded``
with exactly one artifact per segment and kind, its webhook received once, nothing orphaned in
the bucket or the tables. Each scenario runs on private services (tests/faults/conftest.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.support.faults import DeliveryReceiver, FaultReport, FaultRun, kill_mid_task
from tests.support.services import wait_for

RunFactory = Callable[..., FaultRun]


def assert_clean(report: FaultReport, resends_explained: bool = False) -> None:
    assert report.problems == [], "\n".join(report.problems[:40])
    assert (report.ok, report.lost, report.duplicated) == (report.jobs, 0, 0)
    if not resends_explained:
        assert report.webhook_resends == 0


@pytest.mark.parametrize("queue", ["gpt", "sovits", "post"])
def test_worker_pool_killed_mid_task(fault_run: RunFactory, queue: str) -> None:
    # A short visibility timeout: the dead worker's unacked message comes back within seconds.
    # The engine sleeps a little in its stages so that a kill finds work in hand.
    run = fault_run(
        f"kill -9 {queue} pool mid-task",
        VOXMILL_BROKER_VISIBILITY_TIMEOUT_S="6",
        VOXMILL_ENGINE_OPTIONS_JSON='{"gpt_delay_s": 0.05, "sovits_delay_s": 0.05}',
    )
    run.submit_all()
    wait_for(lambda: run.submitted() >= 10, 120, "ten jobs accepted")
    held = kill_mid_task(run, queue)
    run.wait_submitted()
    run.wait_finished()
    report = run.account()
    # A post worker killed between a receiver's 200 and recording it sends that delivery again.
    assert_clean(report, resends_explained=queue == "post")
    # The segments the dead worker held were taken over by a redelivered message, not redone
    # by anyone else, and nothing else was claimed twice.
    assert set(held) <= run.reclaims(queue), (held, run.reclaims(queue))


def test_redis_restarted_without_persistence(fault_run: RunFactory) -> None:
    run = fault_run("Redis restarted, no persistence")
    run.submit_all(pause_s=0.1)
    wait_for(lambda: run.submitted() >= 15, 120, "fifteen jobs accepted")
    run.redis.kill()
    down_since = run.submitted()
    # The API keeps accepting jobs while the broker is gone: rows are written, the enqueue is
    # left to the sweeper (the row is the outbox), and no request hangs.
    wait_for(lambda: run.submitted() >= down_since + 5, 60, "jobs accepted while Redis is down")
    ready = httpx.get(f"{run.api}/readyz", timeout=30)
    assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("unreachable")
    run.redis.start()
    run.wait_submitted()
    run.wait_finished()
    report = run.account()
    assert_clean(report)
    accepted_while_down = [s for s in run.submissions[down_since : down_since + 5]]
    assert all(s.answers[-1][0] == 202 for s in accepted_while_down), [s.answers for s in accepted_while_down]
    assert "sweeper re-enqueued lost work" in run.logs()


def test_postgres_restarted(fault_run: RunFactory) -> None:
    run = fault_run("PostgreSQL restarted")
    run.submit_all(pause_s=0.1)
    wait_for(lambda: run.submitted() >= 15, 120, "fifteen jobs accepted")
    some_job = next(s.job_id for s in run.submissions if s.job_id)
    run.pg.stop("immediate")
    # While the database is down the API answers 503 with a code, and does not hang.
    down = httpx.get(f"{run.api}/v1/jobs/{some_job}", timeout=30)
    assert down.status_code == 503 and down.json()["error"]["code"] == "database_unavailable", down.text
    assert httpx.get(f"{run.api}/readyz", timeout=30).status_code == 503
    time.sleep(3)  # the outage itself: the database stays down this long
    run.pg.start()
    # ... and recovers by itself, without a restart.
    wait_for(lambda: httpx.get(f"{run.api}/v1/jobs/{some_job}", timeout=30).status_code == 200, 60, "the API back")
    run.wait_submitted()
    run.wait_finished()
    report = run.account()
    assert_clean(report)
    api_answers = Counter(a for s in run.submissions for a in s.answers)
    # 200: a retried request whose first try committed before the outage answered it (replay).
    assert all(status in (200, 202, 503, None) for status, _ in api_answers), api_answers
    assert all(code == "database_unavailable" for status, code in api_answers if status == 503), api_answers


def test_s3_unreachable_for_ten_seconds(fault_run: RunFactory, fault_s3: tuple[object, object]) -> None:
    run = fault_run("S3 unreachable for 10 s")
    _, proxy = fault_s3
    run.submit_all(pause_s=0.1)
    wait_for(lambda: run.submitted() >= 15, 120, "fifteen jobs accepted")
    proxy.stop()  # type: ignore[attr-defined]
    try:
        time.sleep(10)
    finally:
        proxy.start()  # type: ignore[attr-defined]
    run.wait_submitted()
    run.wait_finished()
    report = run.account()
    assert_clean(report)
    assert "object storage put of" in run.logs() or "object storage get of" in run.logs()


def test_webhook_receiver_down_for_first_three_attempts(fault_run: RunFactory) -> None:
    receiver = DeliveryReceiver(down_for=3).start()
    try:
        run = fault_run("webhook receiver down for 3 attempts", receiver=receiver)
        run.submit_all()
        run.wait_submitted()
        run.wait_finished()
        report = run.account()
        assert_clean(report)
        attempts = run.webhook_attempts()
        assert len(attempts) == 50
        for rows in attempts.values():
            assert [a.succeeded for a in rows] == [False, False, False, True], rows
            assert [a.number for a in rows] == [1, 2, 3, 4]
        assert Counter(r.delivery_id for r in receiver.receipts) == Counter({d: 4 for d in attempts})
    finally:
        receiver.stop()
