"""kill -9 of a gpt pool that batches across jobs (jobs/batching.py) while a batch is in hand:
every segment of the batch is redelivered and taken over, nothing is lost or done twice."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from db.models import Segment
from tests.faults.test_faults import assert_clean
from tests.support.faults import FaultRun, kill_mid_task
from tests.support.services import wait_for

RunFactory = Callable[..., FaultRun]


def test_gpt_pool_killed_mid_batch(fault_run: RunFactory) -> None:
    run = fault_run(
        "kill -9 gpt pool mid-batch",
        VOXMILL_BROKER_VISIBILITY_TIMEOUT_S="6",
        VOXMILL_GPT_BATCH_SIZE="4",
        VOXMILL_BATCH_WAIT_MS="200",
        # Each segment of a batch sleeps in turn (the test engine has no batched call), so a
        # kill finds a batch in hand.
        VOXMILL_ENGINE_OPTIONS_JSON='{"gpt_delay_s": 0.2, "sovits_delay_s": 0.05}',
    )
    run.submit_all()
    wait_for(lambda: run.submitted() >= 10, 120, "ten jobs accepted")
    # Kill when a batch holds several segments, so the kill lands mid-batch.
    wait_for(lambda: len(run.segments_in("gpt_running")) >= 2, 120, "a batch in hand", interval=0.02)
    held = kill_mid_task(run, "gpt")
    run.wait_submitted()
    run.wait_finished()
    assert_clean(run.account())
    assert len(held) >= 2, held  # the dead pool held a batch, not one segment
    assert set(held) <= run.reclaims("gpt"), (held, run.reclaims("gpt"))
    with run.db.connect() as conn:
        largest = conn.execute(select(func.max(Segment.gpt_batch_size))).scalar_one()
    assert largest is not None and largest > 1  # segments really ran in batches
