"""The API in front of a broker that accepts connections and never answers: each job is
committed (the row is the outbox the sweeper sends from), the request returns instead of
hanging, and readiness says the broker is unreachable."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import create_engine, select

from db.models import Job
from jobs import lifecycle
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support import factories
from tests.support.faults import HalfOpenServer
from tests.support.services import Cluster


def test_api_accepts_jobs_while_the_broker_hangs(cluster_factory: Callable[..., Cluster]) -> None:
    hole = HalfOpenServer()
    try:
        cluster = cluster_factory(
            VOXMILL_BROKER_URL=f"redis://127.0.0.1:{hole.port}/0",
            VOXMILL_BROKER_SOCKET_TIMEOUT_S="2",
            VOXMILL_BROKER_CONNECT_TIMEOUT_S="2",
        )
        api = cluster.api()
        database_url = cluster.env["VOXMILL_DATABASE_URL"]
        runtime = Runtime(Settings(mode="embedded", database_url=database_url))
        with runtime.transaction() as session:
            voice_id = factories.ready_voice(session, lifecycle.default_tenant(session).id).id
        runtime.close()

        answers = [
            httpx.post(
                f"{api}/v1/jobs",
                json={"text": f"Sentence number {i}.", "voice_id": str(voice_id)},
                headers={"Idempotency-Key": f"hang-{i}"},
                timeout=30,  # a hung request fails the test here
            )
            for i in range(4)
        ]
        assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
        ready = httpx.get(f"{api}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["broker"].startswith("unreachable")

        engine = create_engine(database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(Job.id, Job.status)).all()
        engine.dispose()
        assert sorted((str(r.id), r.status) for r in rows) == sorted((a.json()["id"], "queued") for a in answers)
        assert "enqueue after commit" in "\n".join(p.log() for p in cluster.processes)
    finally:
        hole.stop()
