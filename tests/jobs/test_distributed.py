"""The spine on real parts: HTTP API → PostgreSQL → Redis → three worker pools (one per queue)
→ S3 (moto) → a signed webhook. Each test starts its own processes and database."""

from __future__ import annotations

import io
import time
from collections import Counter
from typing import Any

import httpx
import soundfile
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from db.models import Artifact, Job, Segment, StateTransition, WebhookAttempt, WebhookDelivery
from jobs.webhooks import verify
from tests.support.services import Cluster, WebhookReceiver, wait_for
from tests.support.speech import encode, speech_wav

TEXT = "The first sentence is short. The second one is a little longer than the first. And a third!"


REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def reference_wav() -> bytes:
    samples, rate = speech_wav(REFERENCE_TEXT)
    return encode(samples, rate, "wav")


def create_voice(api: str) -> str:
    response = httpx.post(
        f"{api}/v1/voices",
        files={"audio": ("me.wav", reference_wav(), "audio/wav")},
        data={"language": "en", "transcript": REFERENCE_TEXT},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    voice_id: str = response.json()["id"]
    wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice_id}").json()["status"] == "ready", 60, "the voice")
    return voice_id


def wait_job(api: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(f"{api}/v1/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(finished, timeout, f"job {job_id}", interval=0.1)
    return result


def start_pools(cluster: Cluster, sovits_args: tuple[str, ...] = ()) -> str:
    cluster.worker("gpt")
    cluster.worker("sovits", *sovits_args)
    cluster.worker("post")
    return cluster.api()


def transitions(session: Session, job_id: str) -> list[tuple[str, str | None, str, int]]:
    rows = session.execute(
        select(StateTransition.entity_id, StateTransition.from_status, StateTransition.to_status, StateTransition.attempt)
        .where(StateTransition.job_id == job_id)
        .order_by(StateTransition.id)
    ).all()
    return [(str(r[0]), r[1], r[2], r[3]) for r in rows]


def test_job_over_http_reaches_succeeded_with_signed_callback(
    cluster_factory: Any, receiver: WebhookReceiver, s3_server: Any
) -> None:
    cluster: Cluster = cluster_factory()
    api = start_pools(cluster)
    voice_id = create_voice(api)

    response = httpx.post(
        f"{api}/v1/jobs",
        json={"text": TEXT, "voice_id": voice_id, "language": "en", "callback_url": receiver.url},
        headers={"Idempotency-Key": "first-job"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    body = wait_job(api, job_id)
    assert body["status"] == "succeeded", body
    assert body["progress"]["segments_done"] == body["progress"]["segments_total"] >= 1

    # The WAV, fetched back through boto3 from the S3 server, is the audio the API serves.
    job_audio = [a for a in body["artifacts"] if a["kind"] == "audio" and a["segment_index"] is None]
    assert len(job_audio) == 1
    obj = s3_server.client().get_object(Bucket=s3_server.bucket, Key=job_audio[0]["key"])["Body"].read()
    samples, rate = soundfile.read(io.BytesIO(obj))
    assert rate == 32000 and len(samples) > rate // 2
    served = httpx.get(f"{api}/v1/jobs/{job_id}/audio")
    assert served.status_code == 200 and served.content == obj
    assert served.headers["content-type"] == "audio/wav"

    # The receiver got exactly one correctly signed callback naming the job.
    wait_for(lambda: receiver.calls, 30, "the webhook")
    time.sleep(0.5)
    assert len(receiver.calls) == 1
    call = receiver.calls[0]
    assert verify("test-secret", call.headers["Voxmill-Timestamp"], call.body, call.headers["Voxmill-Signature"])
    assert not verify("wrong-secret", call.headers["Voxmill-Timestamp"], call.body, call.headers["Voxmill-Signature"])
    payload = receiver.json_calls()[0]
    assert payload["event"] == "job.succeeded" and payload["data"]["job"]["id"] == job_id
    assert payload["id"] == call.headers["Voxmill-Delivery-Id"]

    # The rows tell the same story.
    engine = create_engine(cluster.env["VOXMILL_DATABASE_URL"])
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded" and job.finished_at is not None
        segments = session.scalars(select(Segment).where(Segment.job_id == job_id)).all()
        assert {s.status for s in segments} == {"succeeded"}
        assert len(segments) == body["progress"]["segments_total"]
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        kinds = Counter((a.segment_id, a.kind) for a in artifacts)
        assert all(n == 1 for n in kinds.values())
        assert sum(1 for a in artifacts if a.segment_id is None) == 1
        assert sum(1 for a in artifacts if a.kind == "audio" and a.segment_id) == len(segments)
        # Every stored artifact is in the bucket with the recorded size, and nothing else is.
        stored = {k for k in s3_server.keys(f"tenants/{job.tenant_id}/") if "/voices/" not in k}
        assert stored == {a.storage_key for a in artifacts}
        for a in artifacts:
            head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=a.storage_key)
            assert head["ContentLength"] == a.size_bytes
        history = transitions(session, job_id)
        assert [h[1:3] for h in history if h[0] == job_id] == [
            (None, "queued"),
            ("queued", "running"),
            ("running", "assembling"),
            ("assembling", "succeeded"),
        ]
        per_segment = Counter((h[0], h[1], h[2]) for h in history if h[0] != job_id)
        assert all(n == 1 for n in per_segment.values()), per_segment
        assert len(per_segment) == 7 * len(segments)  # created + 6 stage changes each
        delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
        assert delivery.status == "delivered" and delivery.attempts == 1
    engine.dispose()

    # The same Idempotency-Key and body returns the same job; another body is refused.
    again = httpx.post(
        f"{api}/v1/jobs",
        json={"text": TEXT, "voice_id": voice_id, "language": "en", "callback_url": receiver.url},
        headers={"Idempotency-Key": "first-job"},
    )
    assert again.status_code == 200 and again.json()["id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    clash = httpx.post(
        f"{api}/v1/jobs", json={"text": "other", "voice_id": voice_id}, headers={"Idempotency-Key": "first-job"}
    )
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"
    ready = httpx.get(f"{api}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_sovits_worker_killed_mid_task_job_still_succeeds_once(
    cluster_factory: Any, s3_server: Any
) -> None:
    cluster: Cluster = cluster_factory(
        VOXMILL_ENGINE_OPTIONS_JSON='{"sovits_delay_s": 1.5}',
        VOXMILL_BROKER_VISIBILITY_TIMEOUT_S="4",
    )
    cluster.worker("gpt")
    sovits = cluster.worker("sovits")
    cluster.worker("post")
    api = cluster.api()
    voice_id = create_voice(api)
    job_id = httpx.post(f"{api}/v1/jobs", json={"text": TEXT, "voice_id": voice_id}).json()["id"]

    engine = create_engine(cluster.env["VOXMILL_DATABASE_URL"])

    def sovits_running() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT count(*) FROM segments WHERE job_id = :j AND status = 'sovits_running'"), {"j": job_id}
                ).scalar()
            )

    wait_for(sovits_running, 60, "a segment in the sovits stage")
    sovits.kill9()
    assert httpx.get(f"{api}/v1/jobs/{job_id}").json()["status"] == "running"
    cluster.worker("sovits", "--name", "replacement")

    body = wait_job(api, job_id, timeout=120)
    assert body["status"] == "succeeded", body
    with Session(engine) as session:
        segments = session.scalars(select(Segment).where(Segment.job_id == job_id)).all()
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
        # Exactly one stored object per segment and kind, in the rows and in the bucket.
        assert Counter((a.segment_id, a.kind) for a in artifacts) == Counter(
            {**{(s.id, k): 1 for s in segments for k in ("semantic", "waveform", "audio")}, (None, "audio"): 1}
        )
        job = session.get(Job, job_id)
        assert job is not None
        stored = {k for k in s3_server.keys(f"tenants/{job.tenant_id}/") if "/voices/" not in k}
        assert stored == {a.storage_key for a in artifacts}
        history = transitions(session, job_id)
        # The killed attempt shows as a re-claim (sovits_running → sovits_running, attempt 2);
        # no other change happened twice.
        counted = Counter((h[0], h[1], h[2]) for h in history)
        reclaims = [k for k, n in counted.items() if k[1] == k[2]]
        assert [k[1] for k in reclaims] == ["sovits_running"]
        assert all(n == 1 for n in counted.values()), counted
        assert any(h[3] == 2 and h[2] == "sovits_running" for h in history)
    engine.dispose()


def test_dead_webhook_receiver_job_stays_succeeded_and_attempts_are_recorded(
    cluster_factory: Any, receiver: WebhookReceiver
) -> None:
    receiver.status = 503
    cluster: Cluster = cluster_factory(VOXMILL_WEBHOOK_MAX_ATTEMPTS="4")
    api = start_pools(cluster)
    voice_id = create_voice(api)
    job_id = httpx.post(
        f"{api}/v1/jobs", json={"text": "Just one sentence.", "voice_id": voice_id, "callback_url": receiver.url}
    ).json()["id"]
    assert wait_job(api, job_id)["status"] == "succeeded"

    def delivery_failed() -> dict[str, Any] | None:
        deliveries = httpx.get(f"{api}/v1/jobs/{job_id}").json()["webhook_deliveries"]
        return deliveries[0] if deliveries and deliveries[0]["status"] == "failed" else None

    delivery = wait_for(delivery_failed, 60, "the delivery to give up")
    assert delivery["attempts"] == 4 and len(delivery["history"]) == 4
    assert [a["status_code"] for a in delivery["history"]] == [503] * 4
    assert not any(a["succeeded"] for a in delivery["history"])
    assert len(receiver.calls) == 4
    assert len({c.headers["Voxmill-Delivery-Id"] for c in receiver.calls}) == 1
    assert httpx.get(f"{api}/v1/jobs/{job_id}").json()["status"] == "succeeded"

    engine = create_engine(cluster.env["VOXMILL_DATABASE_URL"])
    with Session(engine) as session:
        attempts = session.scalars(select(WebhookAttempt)).all()
        assert sorted(a.number for a in attempts) == [1, 2, 3, 4]
        gaps = sorted(attempts, key=lambda a: a.number)
        spacing = [(b.started_at - a.started_at).total_seconds() for a, b in zip(gaps, gaps[1:])]
        assert all(s >= 0.09 for s in spacing), spacing  # backoff, not a hot loop
    engine.dispose()
