"""Pipeline throughput and latency: N short jobs through the real distributed stack (HTTP API,
PostgreSQL, Redis, one worker process per queue) with the deterministic test engine, so what is
measured is voxmill's own overhead, not a model.

    python bench/pipeline.py [--jobs 200] [--storage local|s3] [--submitters 4]

Prints jobs/s and submit→succeeded latency percentiles (from the rows' own timestamps), the
per-stage time split, and, as a baseline in the same run, the cost of the bare parts (an empty
Celery task round trip and an empty PostgreSQL transaction)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.models import Job, StateTransition  # noqa: E402
from jobs.states import JOB_TERMINAL  # noqa: E402
from tests.support.services import (  # noqa: E402
    Cluster,
    create_database,
    distributed_env,
    drop_database,
    redis_url,
    start_s3,
    wait_for,
)
from tests.support.speech import encode, speech_wav  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latencies_ms(rows: list[Any]) -> list[float]:
    """submit→succeeded of each job row, from the rows' own timestamps."""
    return [(r.finished_at - r.created_at).total_seconds() * 1000 for r in rows]


def print_steps(title: str, steps: dict[str, float]) -> None:
    print(f"{title} (ms):")
    for name, value in steps.items():
        print(f"  {name:<28} {value:8.1f}")


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every process: API, workers, PostgreSQL,
    Redis, this script), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def baseline(database_url: str, broker: str) -> dict[str, float]:
    """What the parts cost on their own: an empty transaction, an empty task round trip."""
    from celery import Celery

    engine = create_engine(database_url)
    started = time.perf_counter()
    for _ in range(200):
        with engine.begin() as connection:
            connection.execute(text("SELECT 1"))
    tx_ms = (time.perf_counter() - started) / 200 * 1000
    engine.dispose()

    app = Celery("bench", broker=broker, broker_transport_options={"global_keyprefix": "vxbench-baseline:"})
    started = time.perf_counter()
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        for _ in range(500):
            app.send_task("bench.noop", args=(1,), queue="bench-baseline", producer=producer)
    publish_ms = (time.perf_counter() - started) / 500 * 1000
    return {"empty_pg_transaction_ms": tx_ms, "celery_publish_ms": publish_ms}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--storage", choices=["local", "s3"], default="local")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--post-pool", default=None, help="e.g. prefork:2 (default: the product's, threads:4)")
    parser.add_argument("--one-at-a-time", type=int, default=20, help="jobs then sent singly, each after the last finished")
    args = parser.parse_args()

    database_url = create_database()
    upgrade(database_url)
    broker = redis_url(12)
    s3 = start_s3()
    work = Path(tempfile.mkdtemp(prefix="voxmill-bench-"))
    env = distributed_env(database_url, broker, s3)
    if args.storage == "local":
        env.update(VOXMILL_STORAGE="local", VOXMILL_STORAGE_DIR=str(work / "objects"))
    env["VOXMILL_HOME"] = str(work / "home")
    # The pipeline's throughput, not the front door's limits (bench/front.py measures those).
    env.update(VOXMILL_RATE_LIMIT_REQUESTS_PER_S="0", VOXMILL_RATE_LIMIT_CHARS_PER_MIN="0")
    env["VOXMILL_MAX_QUEUED_JOBS_PER_TENANT"] = "0"
    cluster = Cluster(env=env, log_dir=work)
    try:
        for queue in ("gpt", "sovits", "post"):
            extra = []
            if queue == "post" and args.post_pool:
                pool, _, concurrency = args.post_pool.partition(":")
                extra = ["--pool", pool, "--concurrency", concurrency or "1"]
            cluster.worker(queue, *extra)
        api = cluster.api()
        samples, rate = speech_wav("The quick brown fox jumps over the lazy dog near the river bank.")
        voice = httpx.post(
            f"{api}/v1/voices",
            files={"audio": ("v.wav", encode(samples, rate, "wav"), "audio/wav")},
            data={"language": "en", "transcript": "The quick brown fox jumps over the lazy dog near the river bank."},
            timeout=60,
        ).json()["id"]
        wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice}").json()["status"] == "ready", 60, "voice")

        client = httpx.Client(base_url=api, timeout=30)

        def submit(i: int) -> str:
            response = client.post("/v1/jobs", json={"text": f"Short job number {i}.", "voice_id": voice})
            response.raise_for_status()
            return str(response.json()["id"])

        busy_before = busy_cpu_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.submitters) as pool:
            ids = list(pool.map(submit, range(args.jobs)))
        submit_s = time.perf_counter() - started

        engine = create_engine(database_url)

        def all_done() -> bool:
            with engine.connect() as connection:
                left = connection.execute(
                    text("SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded','failed','cancelled')")
                ).scalar()
            return left == 0

        wait_for(all_done, 600, "all jobs", interval=0.2)
        busy_s = busy_cpu_seconds() - busy_before
        with engine.connect() as connection:
            rows = connection.execute(
                select(Job.id, Job.status, Job.created_at, Job.started_at, Job.finished_at).where(
                    Job.id.in_([uuid.UUID(i) for i in ids])
                )
            ).all()
            transitions = connection.execute(
                select(StateTransition.entity, StateTransition.to_status, StateTransition.created_at).where(
                    StateTransition.job_id.in_([uuid.UUID(i) for i in ids])
                )
            ).all()
        ok = [r for r in rows if r.status == "succeeded"]
        latencies = latencies_ms(ok)
        first = min(r.created_at for r in rows)
        last = max(r.finished_at for r in ok)
        span = (last - first).total_seconds()

        # Where the time goes: mean gap between consecutive recorded transitions, by step.
        by_entity: dict[str, list[tuple[object, str]]] = {}
        for entity, status, at in transitions:
            by_entity.setdefault(entity, []).append((at, status))
        print(f"jobs: {len(rows)} submitted, {len(ok)} succeeded, storage={args.storage}")
        print(f"submission: {submit_s:.2f} s ({len(rows) / submit_s:.0f} req/s over HTTP, {args.submitters} clients)")
        print(f"throughput: {len(ok) / span:.1f} jobs/s (first created → last finished: {span:.2f} s)")
        print(
            f"machine CPU: {busy_s / len(rows) * 1000:.0f} ms per job, all processes together "
            f"({busy_s:.1f} s busy of {os.cpu_count()} cores)"
        )
        print(
            f"submit→succeeded latency: p50 {percentile(latencies, 0.5):.0f} ms, "
            f"p95 {percentile(latencies, 0.95):.0f} ms, max {max(latencies):.0f} ms"
        )
        print_steps("mean time per step", _step_times(engine, ids))

        # The same path with no queue ahead of it: what one job costs end to end.
        def finished(job_id: str) -> bool:
            with engine.connect() as connection:
                status = connection.execute(select(Job.status).where(Job.id == uuid.UUID(job_id))).scalar()
            return status in {s.value for s in JOB_TERMINAL}

        single = []
        for i in range(args.one_at_a_time):
            job_id = submit(args.jobs + i)
            wait_for(lambda: finished(job_id), 60, "the job", interval=0.005)
            single.append(job_id)
        if single:
            with engine.connect() as connection:
                alone = latencies_ms(
                    list(
                        connection.execute(
                            select(Job.created_at, Job.finished_at).where(Job.id.in_([uuid.UUID(i) for i in single]))
                        ).all()
                    )
                )
            print(
                f"one job at a time ({len(alone)} jobs): submit→succeeded p50 {percentile(alone, 0.5):.0f} ms, "
                f"p95 {percentile(alone, 0.95):.0f} ms"
            )
            print_steps("mean time per step, one at a time", _step_times(engine, single))
        engine.dispose()
        base = baseline(database_url, broker)
        print("baseline on this machine, same run:")
        for name, value in base.items():
            print(f"  {name:<28} {value:8.2f} ms")
        return 0
    finally:
        cluster.stop_all()
        s3.stop()
        drop_database(database_url)


def _step_times(engine: object, ids: list[str]) -> dict[str, float]:
    """Mean duration of each lifecycle step, from consecutive transitions of the same row."""
    query = text(
        """
        SELECT entity, from_status, to_status,
               avg(extract(epoch FROM created_at - prev) * 1000) AS ms
        FROM (
            SELECT entity, from_status, to_status, created_at,
                   lag(created_at) OVER (PARTITION BY entity_id ORDER BY id) AS prev
            FROM state_transitions WHERE job_id = ANY(:ids)
        ) t WHERE prev IS NOT NULL
        GROUP BY entity, from_status, to_status ORDER BY ms DESC
        """
    )
    with engine.connect() as connection:  # type: ignore[attr-defined]
        rows = connection.execute(query, {"ids": [uuid.UUID(i) for i in ids]}).all()
    return {f"{r.entity}: {r.from_status}→{r.to_status}": float(r.ms) for r in rows}


if __name__ == "__main__":
    sys.exit(main())
