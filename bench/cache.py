"""Render cache hit latency: how long it takes to find a finished render of a phrase.

    python bench/cache.py [--phrases 500] [--lookups 2000] [--storage s3|local]

L1 is the in-process LRU (no I/O); L2 is one ``render_cache`` query on PostgreSQL plus the
storage check that the object still exists (HEAD on S3 — here moto's server on 127.0.0.1 — or a
stat of a local file). ``get_audio`` adds reading the bytes (what a short-text request serves).
Goals: L1 < 5 ms, L2 < 20 ms at p99. As a baseline in the same run: an empty PostgreSQL
transaction and one bare storage existence check, the floor under an L2 hit."""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.models import Tenant  # noqa: E402
from jobs import cache  # noqa: E402
from jobs.keys import content_key, segment_object_key  # noqa: E402
from jobs.runtime import Runtime  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from tests.support.services import create_database, drop_database, start_s3  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(samples: list[float], fn: object) -> object:
    started = time.perf_counter()
    result = fn()  # type: ignore[operator]
    samples.append((time.perf_counter() - started) * 1000)
    return result


def row(name: str, samples: list[float]) -> str:
    return (
        f"{name:34s} p50 {percentile(samples, 0.5):8.3f} ms   p99 {percentile(samples, 0.99):8.3f} ms"
        f"   mean {statistics.fmean(samples):8.3f} ms   n={len(samples)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phrases", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--storage", choices=["local", "s3"], default="s3")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request

    database_url = create_database()
    upgrade(database_url)
    s3 = start_s3() if args.storage == "s3" else None
    home = Path(tempfile.mkdtemp(prefix="voxmill-bench-cache-"))
    options: dict[str, object] = {"storage": "local", "storage_dir": home / "objects"}
    if s3 is not None:
        options = {
            "storage": "s3",
            "s3_endpoint_url": s3.endpoint,
            "s3_bucket": s3.bucket,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
        }
    settings = Settings(mode="embedded", home=home, database_url=database_url, **options)  # type: ignore[arg-type]
    runtime = Runtime(settings)
    try:
        with runtime.transaction() as session:
            tenant = Tenant(name="bench")
            session.add(tenant)
            session.flush()
            tenant_id = tenant.id
        voice = uuid.uuid4()
        audio = b"\x00" * 48_000  # about a second of 24-bit FLAC: the size of a short phrase
        phrases = [f"Short phrase number {i}." for i in range(args.phrases)]
        keys = [content_key(p, voice, "bench-model", {}) for p in phrases]
        with runtime.transaction() as session:
            for key in keys:
                stored = runtime.storage.put(segment_object_key(tenant_id, key, "audio.flac"), audio, "audio/flac")
                cache.record(session, tenant_id, key, stored, 1.0)

        l1 = cache.l1(settings)
        l2: list[float] = []
        l1_hits: list[float] = []
        audio_l1: list[float] = []
        audio_l2: list[float] = []
        for n in range(args.lookups):
            i = n % len(keys)
            if n < len(keys):  # first pass: every phrase is an L2 hit (L1 empty)
                l1.clear() if n == 0 else None
                with runtime.transaction() as session:
                    hit = timed(l2, lambda: cache.lookup(runtime, session, tenant_id, keys[i], len(phrases[i])))
                assert hit is not None
            else:
                with runtime.transaction() as session:
                    hit = timed(l1_hits, lambda: cache.lookup(runtime, session, tenant_id, keys[i], len(phrases[i])))
                assert hit is not None
        l1.clear()
        for i in range(min(len(keys), 300)):
            timed(audio_l2, lambda: cache.get_audio(runtime, tenant_id, keys[i], len(phrases[i])))
            timed(audio_l1, lambda: cache.get_audio(runtime, tenant_id, keys[i], len(phrases[i])))

        tx: list[float] = []
        head: list[float] = []
        for i in range(300):
            def empty() -> None:
                with runtime.db_engine.begin() as connection:
                    connection.execute(text("SELECT 1"))

            timed(tx, empty)
            timed(head, lambda: runtime.storage.exists(segment_object_key(tenant_id, keys[i % len(keys)], "audio.flac")))

        print(f"render cache hit latency ({args.storage} storage, PostgreSQL, {len(keys)} phrases)")
        print(row("L1 hit (lookup)", l1_hits))
        print(row("L2 hit (lookup: query + exists)", l2))
        print(row("get_audio, L1 (bytes in process)", audio_l1))
        print(row("get_audio, L2 (query+exists+get)", audio_l2))
        print("baseline")
        print(row("empty PostgreSQL transaction", tx))
        print(row(f"storage exists ({args.storage})", head))
        print(
            f"goals: L1 p99 < 5 ms: {'met' if percentile(l1_hits, 0.99) < 5 else 'MISSED'}; "
            f"L2 p99 < 20 ms: {'met' if percentile(l2, 0.99) < 20 else 'MISSED'}"
        )
    finally:
        runtime.close()
        drop_database(database_url)
        if s3 is not None:
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
