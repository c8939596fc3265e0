"""Synchronous endpoints: how soon the first audio arrives, through the real distributed stack
(HTTP API, PostgreSQL, Redis, one worker process per queue, local storage) with the
deterministic test engine slowed to a model-like pace per segment (``--gpt-s``, ``--sovits-s``).

    python bench/sync.py [--requests 5] [--gpt-s 0.4] [--sovits-s 0.3]

For a ~450-character text (about nine segments) it prints, per format, time to the first audio
byte and to the last byte of ``POST /v1/tts``, and the API's own share of the first-byte time:
from the first segment's row turning ``succeeded`` to its bytes at the client (poll, read,
encode, send). Baseline in the same run: the same text through ``POST /v1/jobs``, polling
``GET /v1/jobs/{id}`` and fetching ``/audio`` — what a client without the sync endpoint waits."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import create_engine, select  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.models import Segment, StateTransition  # noqa: E402
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

REFERENCE = "The quick brown fox jumps over the lazy dog near the river bank."
TEXT = (
    "The morning train was late again, so we walked along the river to the old stone bridge. "
    "She opened the window and listened to the rain falling on the garden. Every evening the "
    "baker counts the loaves that are left and gives them to his neighbours. A small boat "
    "drifted past the harbour wall while the gulls circled overhead. He wrote the letter twice, "
    "because the first version sounded far too formal."
)
HEADER_BYTES = {"wav": 44, "mp3": 600}  # past the container header (mp3: ID3 and a frame or so)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--gpt-s", type=float, default=0.4)
    parser.add_argument("--sovits-s", type=float, default=0.3)
    args = parser.parse_args()

    database_url = create_database()
    upgrade(database_url)
    s3 = start_s3()
    work = Path(tempfile.mkdtemp(prefix="voxmill-bench-sync-"))
    env = distributed_env(database_url, redis_url(12), s3)
    env.update(
        VOXMILL_STORAGE="local",
        VOXMILL_STORAGE_DIR=str(work / "objects"),
        VOXMILL_HOME=str(work / "home"),
        VOXMILL_ENGINE_OPTIONS_JSON=json.dumps({"gpt_delay_s": args.gpt_s, "sovits_delay_s": args.sovits_s}),
    )
    cluster = Cluster(env=env, log_dir=work)
    engine = create_engine(database_url)
    try:
        for queue in ("gpt", "sovits", "post"):
            cluster.worker(queue)
        api = cluster.api()
        samples, rate = speech_wav(REFERENCE)
        voice = httpx.post(
            f"{api}/v1/voices",
            files={"audio": ("v.wav", encode(samples, rate, "wav"), "audio/wav")},
            data={"language": "en", "transcript": REFERENCE},
            timeout=60,
        ).json()["id"]
        wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice}").json()["status"] == "ready", 60, "voice")
        client = httpx.Client(base_url=api, timeout=120)

        def first_stored(job_id: str) -> datetime:
            with engine.connect() as connection:
                first = connection.execute(select(Segment.id).where(Segment.job_id == uuid.UUID(job_id), Segment.index == 0)).scalar_one()
                at: datetime = connection.execute(
                    select(StateTransition.created_at).where(
                        StateTransition.entity_id == first, StateTransition.to_status == "succeeded"
                    )
                ).scalar_one()
            return at

        def sync_once(fmt: str, text: str) -> tuple[float, float, float, int]:
            started = time.perf_counter()
            first_at: float | None = None
            first_wall: datetime | None = None
            received = 0
            with client.stream("POST", "/v1/tts", json={"text": text, "voice_id": voice, "format": fmt}) as response:
                response.raise_for_status()
                job_id = response.headers["voxmill-job-id"]
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if first_at is None and received > HEADER_BYTES[fmt]:
                        first_at = time.perf_counter() - started
                        first_wall = datetime.now(timezone.utc)
            total = time.perf_counter() - started
            assert first_at is not None and first_wall is not None
            api_share = (first_wall - first_stored(job_id)).total_seconds()
            with engine.connect() as connection:
                segments = len(connection.execute(select(Segment.id).where(Segment.job_id == uuid.UUID(job_id))).all())
            return first_at, total, api_share, segments

        def async_once(text: str) -> float:
            started = time.perf_counter()
            job_id = client.post("/v1/jobs", json={"text": text, "voice_id": voice, "split": "about_50_chars"}).json()["id"]
            wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", 300, "job", interval=0.05)
            client.get(f"/v1/jobs/{job_id}/audio").raise_for_status()
            return time.perf_counter() - started

        sync_once("wav", "A warm-up line, to load everything once.")
        print(f"text: {len(TEXT)} characters; engine {args.gpt_s:.2f} s gpt + {args.sovits_s:.2f} s sovits per segment")
        for fmt in ("wav", "mp3"):
            runs = [sync_once(fmt, f"{TEXT} Run {fmt} {i}.") for i in range(args.requests)]
            firsts, totals, shares = [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]
            print(
                f"POST /v1/tts {fmt}: {runs[0][3]} segments; first audio byte p50 {pct(firsts, 0.5):.2f} s "
                f"(max {max(firsts):.2f}), last byte p50 {pct(totals, 0.5):.2f} s; first segment stored → "
                f"its bytes at the client p50 {statistics.median(shares) * 1000:.0f} ms (max {max(shares) * 1000:.0f})"
            )
        baseline = [async_once(f"{TEXT} Baseline {i}.") for i in range(args.requests)]
        print(
            f"baseline, same run: POST /v1/jobs + poll + GET audio p50 {pct(baseline, 0.5):.2f} s "
            f"(max {max(baseline):.2f})"
        )
        return 0
    finally:
        engine.dispose()
        cluster.stop_all()
        s3.stop()
        drop_database(database_url)


if __name__ == "__main__":
    sys.exit(main())
