"""Batching across jobs in the gpt pool (jobs/batching.py): the micro-batcher's grouping, and a
batch forming across two jobs in a real gpt worker (threads pool) with each segment still
claimed and completed by its own guarded transition."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from db.models import Segment, StateTransition
from jobs.batching import MicroBatcher
from tests.jobs.test_distributed import create_voice, start_pools, wait_job
from tests.support.services import Cluster


def _submit_together(batcher: MicroBatcher[int, int], items: list[int]) -> dict[int, Any]:
    out: dict[int, Any] = {}

    def one(item: int) -> None:
        try:
            out[item] = batcher.submit(item)
        except Exception as exc:  # noqa: BLE001 (what the task would see)
            out[item] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_items_from_several_threads_share_one_run_and_get_their_own_results() -> None:
    runs: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        runs.append(list(items))
        return [10 * i for i in items]

    # A long wait: the batch runs when it is full, not when the wait ends.
    out = _submit_together(MicroBatcher(run, max_size=4, wait_s=60), [1, 2, 3, 4])
    assert len(runs) == 1 and sorted(runs[0]) == [1, 2, 3, 4]
    assert {i: r for i, (r, _) in out.items()} == {1: 10, 2: 20, 3: 30, 4: 40}
    assert len({info.id for _, info in out.values()}) == 1 and {info.size for _, info in out.values()} == {4}


def test_a_lone_item_runs_alone_and_a_bad_item_fails_only_itself() -> None:
    runs: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        runs.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    batcher = MicroBatcher(run, max_size=8, wait_s=0.05)
    result, info = batcher.submit(7)
    assert (result, info.size, runs) == (7, 1, [[7]])

    runs.clear()
    out = _submit_together(MicroBatcher(run, max_size=3, wait_s=60), [12, 13, 14])
    assert isinstance(out[13], ValueError)
    assert out[12][0] == 12 and out[14][0] == 14
    assert sorted(runs[0]) == [12, 13, 14] and sorted(runs[1:]) == [[12], [13], [14]]  # then one by one


def test_a_batch_forms_across_two_jobs_in_a_real_gpt_worker(cluster_factory: Any) -> None:
    cluster: Cluster = cluster_factory(
        VOXMILL_GPT_BATCH_SIZE="4",
        # Long enough for both jobs' segments to reach the worker before the batch runs.
        VOXMILL_BATCH_WAIT_MS="3000",
    )
    api = start_pools(cluster)
    assert "concurrency: 8 (thread)" in next(p for p in cluster.processes if p.name == "worker-gpt").log()
    voice_id = create_voice(api)
    jobs = [
        httpx.post(f"{api}/v1/jobs", json={"text": text, "voice_id": voice_id, "language": "en"}, timeout=30).json()["id"]
        for text in ("The first job has one segment.", "The second job has one too.")
    ]
    for job_id in jobs:
        assert wait_job(api, job_id)["status"] == "succeeded"

    db = create_engine(cluster.env["VOXMILL_DATABASE_URL"])
    try:
        with db.connect() as conn:
            rows = conn.execute(
                select(Segment.id, Segment.job_id, Segment.gpt_batch_id, Segment.gpt_batch_size).where(
                    Segment.job_id.in_(jobs)
                )
            ).all()
            gpt_done = Counter(
                conn.execute(
                    select(StateTransition.entity_id).where(
                        StateTransition.job_id.in_(jobs), StateTransition.to_status == "gpt_done"
                    )
                ).scalars()
            )
    finally:
        db.dispose()
    assert len(rows) == 2 and all(r.gpt_batch_id is not None for r in rows)
    by_batch: dict[str, set[str]] = {}
    for r in rows:
        by_batch.setdefault(r.gpt_batch_id, set()).add(str(r.job_id))
    assert any(len(job_ids) == 2 for job_ids in by_batch.values()), rows  # one batch held both jobs
    for r in rows:
        assert r.gpt_batch_size == sum(1 for s in rows if s.gpt_batch_id == r.gpt_batch_id)
    # Each segment was completed once, by its own guarded transition.
    assert {str(k): v for k, v in gpt_done.items()} == {str(r.id): 1 for r in rows}
