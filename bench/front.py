"""What the front door costs per request, on real PostgreSQL and Redis: a token-bucket charge (one
Lua call), key authentication (one indexed lookup), the breaker's answer (cached, and measured),
a callback URL check, and a whole GET through the in-process API with auth and limits on versus
off. Baselines measured in the same run: a Redis PING and an empty PostgreSQL transaction.

    .venv/bin/python bench/front.py [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from jobs import callbacks, tenants  # noqa: E402
from jobs.breaker import breaker  # noqa: E402
from jobs.limits import Bucket, limiter  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from tests.support import factories  # noqa: E402
from tests.support.front import api, distributed_settings, new_key, new_tenant  # noqa: E402
from tests.support.services import create_database, drop_database, redis_url  # noqa: E402


def per_call_us(fn: Callable[[], object], n: int) -> float:
    fn()
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n // 5):
            fn()
        samples.append((time.perf_counter() - started) / (n // 5) * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    n = args.n
    database_url = create_database()
    upgrade(database_url)
    home = Path(tempfile.mkdtemp(prefix="voxmill-bench-front-"))
    try:
        settings = distributed_settings(database_url, redis_url(12), home, rate_limit_requests_per_s=1e9,
                                        rate_limit_burst=10**9)  # fmt: skip
        figures: dict[str, float] = {}
        with api(settings) as (client, runtime, _):
            lim = limiter(runtime)
            assert lim._client is not None
            figures["baseline: redis PING"] = per_call_us(lim._client.ping, n)
            with runtime.db_engine.connect() as connection:
                figures["baseline: empty PostgreSQL transaction"] = per_call_us(
                    lambda: (connection.execute(text("SELECT 1")), connection.commit()), n // 4
                )
            who = f"bench:{uuid.uuid4()}"
            bucket = [Bucket("bench", 1e9, 1e9, 1)]
            figures["token bucket charge (Lua)"] = per_call_us(lambda: lim.take(who, bucket), n)
            tenant_id = new_tenant(runtime)
            header = new_key(runtime, tenant_id)["Authorization"]

            def authenticate() -> None:
                with runtime.transaction() as session:
                    tenants.identify(session, header)

            figures["key authentication (transaction + lookup)"] = per_call_us(authenticate, n // 4)
            b = breaker(runtime)
            figures["breaker answer, cached"] = per_call_us(b.state, n)
            runtime.settings.breaker_check_interval_s = 0
            figures["breaker answer, measured (broker + PostgreSQL)"] = per_call_us(b.state, n // 10)
            plain = Settings()
            figures["callback URL check (IP literal)"] = per_call_us(
                lambda: callbacks.check("https://8.8.8.8/hook", plain), n
            )
            with runtime.transaction() as session:
                voice_id = factories.ready_voice(session, tenant_id).id
            on = {"Authorization": header}
            figures["GET /v1/voices/{id}, auth + limits on"] = per_call_us(
                lambda: client.get(f"/v1/voices/{voice_id}", headers=on), n // 4
            )
        off = distributed_settings(database_url, redis_url(12), home, auth_required=False,
                                   rate_limit_requests_per_s=0)  # fmt: skip
        with api(off) as (client, runtime, _):
            with runtime.transaction() as session:
                from jobs.lifecycle import default_tenant

                voice_id = factories.ready_voice(session, default_tenant(session).id).id
            figures["GET /v1/voices/{id}, auth + limits off"] = per_call_us(
                lambda: client.get(f"/v1/voices/{voice_id}"), n // 4
            )
        width = max(map(len, figures))
        for name, us in figures.items():
            print(f"{name:<{width}}  {us:9.1f} µs")
    finally:
        drop_database(database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
