"""Limits against real Redis and PostgreSQL (the API in-process, distributed mode, no workers):
per-key token buckets answer 429 with Retry-After, a tenant's unfinished jobs are capped (also
under concurrent submissions), oversized bodies get 413, and the sync circuit breaker opens on a
deep sovits queue or a high sovits error rate — 503 + Retry-After for sync requests while async
jobs are still accepted — and closes again after its cooldown."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api_min.deps import SyncCapacity
from db.models import Job, StateTransition, utcnow
from jobs.breaker import breaker
from jobs.celery_app import TaskName
from jobs.limits import Bucket, limiter
from jobs.runtime import Runtime
from jobs.submission import JobRequest, RequestRejected, submit_job
from tests.support import factories
from tests.support.front import api, assert_error, distributed_settings, new_key, new_tenant
from tests.support.services import free_port, wait_for


def ready_voice(runtime: Runtime, tenant_id: uuid.UUID) -> str:
    with runtime.transaction() as session:
        return str(factories.ready_voice(session, tenant_id).id)


def retry_after(response: Any) -> int:
    value = int(response.headers["Retry-After"])
    assert value >= 1
    return value


@pytest.fixture()
def limited(pg_url: str, broker_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    settings = distributed_settings(
        pg_url,
        broker_url,
        tmp_path,
        rate_limit_requests_per_s=2.0,
        rate_limit_burst=3,
        rate_limit_chars_per_min=100,
        max_request_bytes=64 * 1024,
    )
    with api(settings) as (client, runtime, _):
        yield client, runtime


def test_requests_per_second_per_key(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    tenant_id = new_tenant(runtime)
    first, second = new_key(runtime, tenant_id), new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)

    answers = [client.get(f"/v1/voices/{voice_id}", headers=first).status_code for _ in range(6)]
    assert answers[:3] == [200, 200, 200]  # the burst
    refused = client.get(f"/v1/voices/{voice_id}", headers=first)
    assert_error(refused, 429, "rate_limited")
    assert retry_after(refused) <= 2
    # Each key has its own bucket, even within one tenant.
    assert client.get(f"/v1/voices/{voice_id}", headers=second).status_code == 200
    # Refilled at 2 per second: the first key gets through again without anyone resetting it.
    wait_for(lambda: client.get(f"/v1/voices/{voice_id}", headers=first).status_code == 200, 30, "a refill", 0.3)


def test_characters_per_minute(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)

    assert client.post("/v1/jobs", json={"text": "x" * 60, "voice_id": voice_id}, headers=me).status_code == 202
    refused = client.post("/v1/jobs", json={"text": "y" * 60, "voice_id": voice_id}, headers=me)
    assert_error(refused, 429, "characters_rate_limited")
    assert 1 <= retry_after(refused) <= 60
    # Refused for characters, the request spent no request token and made no job.
    assert client.get(f"/v1/voices/{voice_id}", headers=me).status_code == 200
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 1

    # A text longer than a whole minute's allowance goes through on a full bucket, and leaves
    # the bucket in debt: the next one waits.
    other = new_key(runtime, tenant_id)
    assert client.post("/v1/jobs", json={"text": "z" * 250, "voice_id": voice_id}, headers=other).status_code == 202
    assert_error(
        client.post("/v1/jobs", json={"text": "w", "voice_id": voice_id}, headers=other), 429, "characters_rate_limited"
    )


def test_buckets_are_atomic_under_concurrency(limited: tuple[TestClient, Runtime]) -> None:
    _, runtime = limited
    lim = limiter(runtime)
    bucket = [Bucket("atomic", rate_per_s=0.001, capacity=10, cost=1)]
    who = f"test:{uuid.uuid4()}"
    admitted: list[bool] = []
    start = threading.Barrier(20)

    def hammer() -> None:
        start.wait()
        for _ in range(3):
            admitted.append(lim.take(who, bucket) == 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 60 and sum(admitted) == 10


def test_unfinished_jobs_are_capped_per_tenant(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    runtime.settings.rate_limit_chars_per_min = 0  # this test is about the cap alone
    runtime.settings.rate_limit_requests_per_s = 0
    tenant_id = new_tenant(runtime, max_queued_jobs=2)
    me = new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)
    jobs = [client.post("/v1/jobs", json={"text": f"Job {i}.", "voice_id": voice_id}, headers=me) for i in range(2)]
    assert [j.status_code for j in jobs] == [202, 202]
    refused = client.post("/v1/jobs", json={"text": "One too many.", "voice_id": voice_id}, headers=me)
    assert_error(refused, 429, "too_many_queued_jobs")
    assert retry_after(refused) == runtime.settings.queued_jobs_retry_after_s
    # A finished (here: cancelled) job frees its place.
    assert client.post(f"/v1/jobs/{jobs[0].json()['id']}/cancel", headers=me).status_code == 200
    assert client.post("/v1/jobs", json={"text": "Now it fits.", "voice_id": voice_id}, headers=me).status_code == 202

    # Concurrent submissions cannot both take the last place: the tenant row is locked.
    crowd = new_tenant(runtime, max_queued_jobs=3)
    crowd_voice = uuid.UUID(ready_voice(runtime, crowd))
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def submit(i: int) -> None:
        start.wait()
        try:
            submit_job(runtime, crowd, JobRequest(text=f"Crowd {i}.", voice_id=crowd_voice))
            outcomes.append("created")
        except RequestRejected as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] * 3 + ["too_many_queued_jobs"] * 5


def test_request_bodies_over_the_limit_get_413(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)
    big = ('{"voice_id": "%s", "text": "' % voice_id + "a" * 70_000 + '"}').encode()
    response = client.post("/v1/jobs", content=big, headers={**me, "Content-Type": "application/json"})
    assert_error(response, 413, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    response = client.post("/v1/jobs", content=chunked(), headers={**me, "Content-Type": "application/json"})
    assert_error(response, 413, "request_too_large")
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 0


# ----------------------------------------------------------------------------- circuit breaker


@pytest.fixture()
def guarded(fresh_pg_url: str, broker_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Runtime, FastAPI]]:
    """The API with a stand-in sync route guarded the way /v1/tts must be, on a database of its
    own (the breaker counts every tenant's sovits outcomes)."""
    settings = distributed_settings(
        fresh_pg_url,
        broker_url,
        tmp_path,
        breaker_max_queue_depth=3,
        breaker_min_samples=10,
        breaker_max_error_rate=0.5,
        breaker_window_s=60,
        breaker_cooldown_s=2,
        breaker_check_interval_s=0,
    )
    with api(settings) as (client, runtime, app):

        @app.post("/test/sync", dependencies=[SyncCapacity])
        def sync_stand_in() -> dict[str, str]:
            return {"audio": "…"}

        yield client, runtime, app


def record_sovits_outcomes(runtime: Runtime, done: int, failed: int, retried: int, age_s: float = 0) -> None:
    at = utcnow() - timedelta(seconds=age_s)
    with runtime.transaction() as session:
        for to, n in (("sovits_done", done), ("failed", failed), ("sovits_running", retried)):
            session.add_all(
                StateTransition(
                    entity="segment", entity_id=uuid.uuid4(), job_id=uuid.uuid4(),
                    from_status="sovits_running", to_status=to, attempt=1, created_at=at,
                )  # fmt: skip
                for _ in range(n)
            )


def test_breaker_opens_on_a_deep_sovits_queue(guarded: tuple[TestClient, Runtime, FastAPI]) -> None:
    client, runtime, _ = guarded
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)
    assert client.post("/test/sync", headers=me).status_code == 200

    for _ in range(4):  # one more than breaker_max_queue_depth, and no sovits worker to take them
        runtime.celery.send_task(TaskName.PROCESS_VOICE.value, args=[str(uuid.uuid4())])
    refused = client.post("/test/sync", headers=me)
    body = assert_error(refused, 503, "sync_unavailable")
    assert "sovits queue holds 4 messages" in body["error"]["message"]
    assert 1 <= retry_after(refused) <= 2
    # The real sync routes are guarded the same way (the OpenAI one in its error shape too).
    tts = client.post("/v1/tts", json={"text": "Hello.", "voice_id": voice_id}, headers=me)
    assert_error(tts, 503, "sync_unavailable")
    speech = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "voice": voice_id}, headers=me
    )
    assert speech.status_code == 503 and speech.json()["error"]["code"] == "sync_unavailable"
    # Async work is still accepted and queued.
    job = client.post("/v1/jobs", json={"text": "Queued while sync is paused.", "voice_id": voice_id}, headers=me)
    assert job.status_code == 202 and job.json()["status"] == "queued"

    # The queue drains (purged here); the breaker stays open for its cooldown, then closes.
    with runtime.celery.connection_for_write() as connection:
        connection.default_channel.queue_purge("sovits")
    wait_for(lambda: client.post("/test/sync", headers=me).status_code == 200, 30, "the breaker to close", 0.2)


def test_breaker_opens_on_a_high_sovits_error_rate(guarded: tuple[TestClient, Runtime, FastAPI]) -> None:
    client, runtime, _ = guarded
    me = new_key(runtime, new_tenant(runtime))
    # Too few samples to judge, and failures outside the window: closed.
    record_sovits_outcomes(runtime, done=1, failed=5, retried=0)
    record_sovits_outcomes(runtime, done=0, failed=50, retried=0, age_s=600)
    assert client.post("/test/sync", headers=me).status_code == 200
    # Enough samples, mostly healthy: closed.
    record_sovits_outcomes(runtime, done=10, failed=2, retried=1)
    assert client.post("/test/sync", headers=me).status_code == 200
    assert breaker(runtime).state().open is False
    # Failures and retries take over (11 + 6 of 28): open.
    record_sovits_outcomes(runtime, done=0, failed=4, retried=5)
    refused = client.post("/test/sync", headers=me)
    body = assert_error(refused, 503, "sync_unavailable")
    assert "61% of the last 28 sovits attempts failed" in body["error"]["message"]
    assert retry_after(refused) >= 1
    # Every API process reads the same open state from Redis.
    other_process = breaker(Runtime(runtime.settings))
    assert other_process.state().open is True
    breaker(runtime).reset()
    record_sovits_outcomes(runtime, done=40, failed=0, retried=0)
    assert client.post("/test/sync", headers=me).status_code == 200


def test_text_the_database_cannot_hold_is_refused(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    voice_id = ready_voice(runtime, tenant_id)
    # PostgreSQL refuses NUL in text; a lone surrogate (a legal JSON escape) is not UTF-8 and
    # is refused by the schema already.
    for text, code in ((r"before\u0000after", "invalid_text"), (r"half a pair: \ud800", "invalid_request")):
        body = f'{{"text": "{text}", "voice_id": "{voice_id}"}}'.encode()
        response = client.post("/v1/jobs", content=body, headers={**me, "Content-Type": "application/json"})
        assert_error(response, 422, code)
    # A voice looked up by a name no voice can have is simply not found.
    body = b'{"model": "tts-1", "input": "Hello.", "voice": "nar\\u0000rator"}'
    response = client.post("/v1/audio/speech", content=body, headers={**me, "Content-Type": "application/json"})
    assert_error(response, 404, "voice_not_found")
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 0


# ----------------------------------------------------------------------------- every route that queues work


BOOK = ("Chapter One\n\n" + "The river ran fast under the old bridge. " * 3).encode()  # 137 characters


def post_book(client: TestClient, headers: dict[str, str], voice_id: str, project: str, **form: str) -> Any:
    return client.post(
        "/v1/books",
        files={"file": ("book.txt", BOOK, "text/plain")},
        data={"voice": voice_id, "project": project, **form},
        headers=headers,
    )


def unfinished_jobs(runtime: Runtime, tenant_id: uuid.UUID) -> int:
    with runtime.transaction() as session:
        return session.query(Job).filter(Job.tenant_id == tenant_id, Job.status.notin_(("cancelled", "succeeded", "failed"))).count()


def test_books_and_projects_are_charged_characters(limited: tuple[TestClient, Runtime]) -> None:
    """100 characters a minute per key: a 137-character book goes through on a full bucket and
    leaves it in debt; every later book, project patch or render of that key waits."""
    client, runtime = limited
    runtime.settings.rate_limit_requests_per_s = 0  # this test is about characters alone
    tenant_id = new_tenant(runtime)
    voice_id = ready_voice(runtime, tenant_id)
    me = new_key(runtime, tenant_id)
    first = post_book(client, me, voice_id, "first")
    assert first.status_code == 202, first.text
    project_id = first.json()["project_id"]
    assert_error(post_book(client, me, voice_id, "second"), 429, "characters_rate_limited")
    assert_error(client.post(f"/v1/projects/{project_id}/render", headers=me), 429, "characters_rate_limited")
    patched = client.patch(f"/v1/projects/{project_id}", json={"params": {"speed": 1.1}}, headers=me)
    assert_error(patched, 429, "characters_rate_limited")
    # A plain job shares the bucket.
    assert_error(client.post("/v1/jobs", json={"text": "Hi.", "voice_id": voice_id}, headers=me), 429, "characters_rate_limited")

    # Another key of the tenant has its own bucket: the stored book's characters are charged.
    other = new_key(runtime, tenant_id)
    assert client.post(f"/v1/projects/{project_id}/render", headers=other).status_code == 202
    assert_error(client.post(f"/v1/projects/{project_id}/render", headers=other), 429, "characters_rate_limited")
    third = new_key(runtime, tenant_id)
    assert client.patch(f"/v1/projects/{project_id}", json={"params": {"speed": 1.1}}, headers=third).status_code == 200
    assert_error(
        client.patch(f"/v1/projects/{project_id}", json={"params": {"speed": 1.2}}, headers=third),
        429,
        "characters_rate_limited",
    )
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 3  # book, render, patch


def test_books_and_projects_count_against_the_queued_job_cap(limited: tuple[TestClient, Runtime]) -> None:
    client, runtime = limited
    runtime.settings.rate_limit_chars_per_min = 0  # this test is about the cap alone
    runtime.settings.rate_limit_requests_per_s = 0
    tenant_id = new_tenant(runtime, max_queued_jobs=2)
    voice_id = ready_voice(runtime, tenant_id)
    me = new_key(runtime, tenant_id)
    book = post_book(client, me, voice_id, "kept")
    assert book.status_code == 202, book.text
    project_id = book.json()["project_id"]
    assert client.post("/v1/jobs", json={"text": "A job.", "voice_id": voice_id}, headers=me).status_code == 202
    # At the cap: a new project name each time queues nothing more.
    for name in ("another", "and another"):
        assert_error(post_book(client, me, voice_id, name), 429, "too_many_queued_jobs")
    assert_error(client.post("/v1/jobs", json={"text": "No.", "voice_id": voice_id}, headers=me), 429, "too_many_queued_jobs")
    assert_error(client.post("/v1/tts", json={"text": "No.", "voice_id": voice_id}, headers=me), 429, "too_many_queued_jobs")
    # Rendering the project again supersedes its unfinished render: still two unfinished jobs.
    assert client.post(f"/v1/projects/{project_id}/render", headers=me).status_code == 202
    assert client.patch(f"/v1/projects/{project_id}", json={"params": {"speed": 1.1}}, headers=me).status_code == 200
    assert unfinished_jobs(runtime, tenant_id) == 2
    # A second tenant-wide job on top of them is refused, whichever route asks.
    other = new_tenant(runtime, max_queued_jobs=1)
    other_voice = ready_voice(runtime, other)
    other_key = new_key(runtime, other)
    assert post_book(client, other_key, other_voice, "one").status_code == 202
    assert_error(post_book(client, other_key, other_voice, "two"), 429, "too_many_queued_jobs")
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == other).count() == 1


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "callback_url_insecure"),
        ("https://169.254.169.254/latest/meta-data/", "callback_url_forbidden"),
        ("https://10.0.0.7/hook", "callback_url_forbidden"),
        ("ftp://example.com/hook", "callback_url_invalid"),
    ],
)
def test_book_callback_urls_are_checked_at_submission(limited: tuple[TestClient, Runtime], url: str, code: str) -> None:
    client, runtime = limited
    runtime.settings.rate_limit_requests_per_s = 0
    tenant_id = new_tenant(runtime)
    voice_id = ready_voice(runtime, tenant_id)
    me = new_key(runtime, tenant_id)
    assert_error(post_book(client, me, voice_id, "hooked", callback_url=url), 422, code)
    with runtime.transaction() as session:
        assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 0
    # Nothing was stored for the refused book.
    assert not list((runtime.settings.storage_dir or Path()).glob(f"tenants/{tenant_id}/**/*.txt"))


# ----------------------------------------------------------------------------- Redis unreachable


def store_errors(client: TestClient, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'voxmill_rate_limit_store_errors_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_rate_limits_without_redis_follow_the_setting(
    pg_url: str, broker_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    """The limits' Redis is a closed port (the broker is fine): ``open`` admits and says so,
    ``closed`` answers 503 — a warning and a metric either way."""
    settings = distributed_settings(
        pg_url, broker_url, tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_on_redis_error=policy
    )
    with api(settings) as (client, runtime, _):
        tenant_id = new_tenant(runtime)
        me = new_key(runtime, tenant_id)
        voice_id = ready_voice(runtime, tenant_id)
        outcome = "admitted" if policy == "open" else "refused"
        before = store_errors(client, outcome)
        with caplog.at_level(logging.WARNING, logger="voxmill.limits"):
            answer = client.get(f"/v1/voices/{voice_id}", headers=me)
            job = client.post("/v1/jobs", json={"text": "Hello.", "voice_id": voice_id}, headers=me)
        if policy == "open":
            assert answer.status_code == 200 and job.status_code == 202
            assert store_errors(client, outcome) == before + 3  # request, request, characters
        else:
            assert_error(answer, 503, "rate_limits_unavailable")
            assert retry_after(answer) >= 1
            assert_error(job, 503, "rate_limits_unavailable")
            assert store_errors(client, outcome) == before + 2
            with runtime.transaction() as session:
                assert session.query(Job).filter(Job.tenant_id == tenant_id).count() == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("rate limits unavailable" in w and ("refusing" if policy == "closed" else "admitting") in w for w in warnings)


def test_books_have_their_own_body_cap(pg_url: str, broker_url: str, tmp_path: Path) -> None:
    """A book may be larger than the generic body cap, up to max_book_bytes; past that it is
    refused as book_too_large — by the route just past the cap, by the body guard far past it."""
    settings = distributed_settings(
        pg_url, broker_url, tmp_path, max_request_bytes=16 * 1024, max_book_bytes=64 * 1024,
        rate_limit_requests_per_s=0, rate_limit_chars_per_min=0,
    )  # fmt: skip
    with api(settings) as (client, runtime, _):
        tenant_id = new_tenant(runtime)
        voice_id = ready_voice(runtime, tenant_id)
        me = new_key(runtime, tenant_id)
        paragraph = "The river ran fast under the old bridge, and nobody crossed it after dark.\n\n"

        def book(size: int) -> Any:
            text = (paragraph * (size // len(paragraph) + 1))[:size].encode()
            return client.post(
                "/v1/books", files={"file": ("big.txt", text, "text/plain")}, data={"voice": voice_id}, headers=me
            )

        accepted = book(40 * 1024)  # over max_request_bytes, under max_book_bytes
        assert accepted.status_code == 202, accepted.text
        assert_error(book(64 * 1024 + 1), 413, "book_too_large")
        assert_error(book(1024 * 1024), 413, "book_too_large")
        # Other bodies keep the generic cap.
        big_job = {"text": "x" * (20 * 1024), "voice_id": voice_id}
        assert_error(client.post("/v1/jobs", json=big_job, headers=me), 413, "request_too_large")
