"""A worker that is asked to stop finishes what it holds: SIGTERM (a deploy, systemd stop) and
the memory limit (jobs.recycling) both end in a warm shutdown, exit 0, and leave no segment
half-done for someone else to redo."""

from __future__ import annotations

import signal
from collections.abc import Callable

from sqlalchemy import select

from db.models import Job, Segment
from tests.support.faults import FaultRun, signal_group
from tests.support.services import wait_for

RunFactory = Callable[..., FaultRun]


def job_status(run: FaultRun, job_id: str) -> str:
    with run.db.connect() as conn:
        return str(conn.execute(select(Job.status).where(Job.id == job_id)).scalar_one())


def segment_status(run: FaultRun, segment_id: str) -> str:
    with run.db.connect() as conn:
        return str(conn.execute(select(Segment.status).where(Segment.id == segment_id)).scalar_one())


def test_sigterm_lets_a_worker_finish_its_segment(fault_run: RunFactory) -> None:
    run = fault_run("SIGTERM", supervise=False, VOXMILL_ENGINE_OPTIONS_JSON='{"sovits_delay_s": 2}')
    submission = run.submissions[0]
    run.submit(submission)
    assert submission.job_id is not None
    (held,) = wait_for(lambda: run.segments_in("sovits_running"), 60, "a segment in the sovits stage", 0.02)
    worker = run.workers["sovits"]

    signal_group(worker, signal.SIGTERM)
    assert worker.popen.wait(timeout=60) == 0, worker.log()[-3000:]
    # It finished the segment in hand (stored and recorded) before exiting ...
    assert segment_status(run, held) in ("sovits_done", "post_running", "succeeded")
    assert "Warm shutdown" in worker.log()
    # ... and took nothing else: the job's other segment waits for the next worker.
    assert job_status(run, submission.job_id) == "running"

    run.replace_worker("sovits")
    wait_for(lambda: job_status(run, submission.job_id or "") == "succeeded", 120, "the job")
    assert run.reclaims("sovits") == set()  # nothing was done twice


def test_worker_past_its_memory_limit_recycles_after_its_task(fault_run: RunFactory) -> None:
    run = fault_run("memory recycling", supervise=False)
    run.workers["gpt"].stop()
    run.cluster.env["VOXMILL_WORKER_MAX_MEMORY_PER_CHILD_KB"] = "1"  # any process is above this
    small = run.replace_worker("gpt")
    del run.cluster.env["VOXMILL_WORKER_MAX_MEMORY_PER_CHILD_KB"]

    submission = run.submissions[0]
    run.submit(submission)
    assert small.popen.wait(timeout=60) == 0, small.log()[-3000:]
    assert "resident memory above the limit" in small.log()
    # Its one task (planning) completed before it left; the segments wait for the next worker.
    assert job_status(run, submission.job_id or "") == "running"
    assert run.segments_in("gpt_running") == []

    run.replace_worker("gpt")
    wait_for(lambda: job_status(run, submission.job_id or "") == "succeeded", 120, "the job")
