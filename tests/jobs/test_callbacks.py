"""Callback URLs: https only, public addresses only — at submission (a 422 with a code, no job
row) and again at delivery, where a name that now resolves somewhere forbidden (DNS rebinding)
is refused without a connection, and an allowed one is reached at the very address that was
checked. Nothing here connects anywhere but the webhook receiver on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Job, WebhookAttempt, WebhookDelivery
from jobs import callbacks, lifecycle
from jobs.callbacks import CallbackRejected
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support import factories
from tests.support.front import api, assert_error, embedded_settings, new_key, new_tenant
from tests.support.services import WebhookReceiver

PUBLIC = "93.184.215.14"  # a public address; only ever checked here, never connected to

REFUSED: list[tuple[str, str]] = [
    ("http://8.8.8.8/hook", callbacks.INSECURE),
    ("https://127.0.0.1/hook", callbacks.FORBIDDEN),
    ("https://127.1.2.3:8443/hook", callbacks.FORBIDDEN),
    ("https://10.0.0.7/hook", callbacks.FORBIDDEN),
    ("https://172.16.4.1/hook", callbacks.FORBIDDEN),
    ("https://192.168.1.1/hook", callbacks.FORBIDDEN),
    ("https://169.254.169.254/latest/meta-data/", callbacks.FORBIDDEN),
    ("https://169.254.10.1/hook", callbacks.FORBIDDEN),
    ("https://100.64.3.2/hook", callbacks.FORBIDDEN),
    ("https://100.100.100.200/latest/meta-data", callbacks.FORBIDDEN),
    ("https://168.63.129.16/machine", callbacks.FORBIDDEN),
    ("https://224.0.0.251/hook", callbacks.FORBIDDEN),
    ("https://0.0.0.0/hook", callbacks.FORBIDDEN),
    ("https://255.255.255.255/hook", callbacks.FORBIDDEN),
    ("https://[::1]/hook", callbacks.FORBIDDEN),
    ("https://[fe80::1]/hook", callbacks.FORBIDDEN),
    ("https://[fd00:ec2::254]/latest", callbacks.FORBIDDEN),
    ("https://[fc00::5]/hook", callbacks.FORBIDDEN),
    ("https://[::ffff:127.0.0.1]/hook", callbacks.FORBIDDEN),
    ("https://[::ffff:8.8.8.8]/hook", callbacks.FORBIDDEN),  # mapped forms are refused outright
    ("https://[64:ff9b::a00:1]/hook", callbacks.FORBIDDEN),  # NAT64 of 10.0.0.1
    ("https://[2002:a9fe:a9fe::1]/hook", callbacks.FORBIDDEN),  # 6to4 of 169.254.169.254
    ("https://0x7f.1/hook", callbacks.FORBIDDEN),  # inet_aton spellings of 127.0.0.1
    ("https://2130706433/hook", callbacks.FORBIDDEN),
    ("https://017700000001/hook", callbacks.FORBIDDEN),
    ("https://hooks.nowhere.invalid/hook", callbacks.UNRESOLVABLE),
    ("ftp://8.8.8.8/hook", callbacks.INVALID),
    ("file:///etc/passwd", callbacks.INVALID),
    ("javascript:alert(1)", callbacks.INVALID),
    ("https:///hook", callbacks.INVALID),
    ("https://exa mple.com/hook", callbacks.INVALID),
    ("https://example.com/\r\nX-Injected: 1", callbacks.INVALID),
    ("https://8.8.8.8:99999/hook", callbacks.INVALID),
    ("", callbacks.INVALID),
]


@pytest.mark.parametrize("url,code", REFUSED, ids=[u or "empty" for u, _ in REFUSED])
def test_refused_callback_urls(url: str, code: str) -> None:
    with pytest.raises(CallbackRejected) as info:
        callbacks.check(url, Settings())
    assert info.value.code == code, info.value.message


def test_accepted_callback_urls() -> None:
    settings = Settings()
    assert str(callbacks.check("https://8.8.8.8/hook?x=1", settings).address) == "8.8.8.8"
    assert str(callbacks.check("https://[2606:4700:4700::1111]:8443/h", settings).address) == "2606:4700:4700::1111"
    pinned = Settings(callback_resolve=f"hooks.example.com={PUBLIC}")
    assert str(callbacks.check("https://Hooks.Example.com./v1/voxmill", pinned).address) == PUBLIC
    # What a deployment allows on purpose: http, and its own networks.
    local = Settings(callback_allow_http=True, callback_allowed_networks="127.0.0.0/8, 10.1.0.0/16")
    assert str(callbacks.check("http://127.0.0.1:9000/hook", local).address) == "127.0.0.1"
    assert str(callbacks.check("https://10.1.2.3/hook", local).address) == "10.1.2.3"
    with pytest.raises(CallbackRejected):
        callbacks.check("https://10.2.0.1/hook", local)  # outside the allowed networks


@pytest.fixture()
def front(pg_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    with api(embedded_settings(pg_url, tmp_path)) as (client, runtime, _):
        yield client, runtime


def test_submission_refuses_forbidden_callbacks(front: tuple[TestClient, Runtime]) -> None:
    client, runtime = front
    tenant_id = new_tenant(runtime)
    me = new_key(runtime, tenant_id)
    with runtime.transaction() as session:
        voice_id = str(factories.ready_voice(session, tenant_id).id)
    for url, code in [
        ("http://8.8.8.8/hook", "callback_url_insecure"),
        ("https://169.254.169.254/latest/meta-data/iam", "callback_url_forbidden"),
        ("https://[::ffff:10.0.0.1]/hook", "callback_url_forbidden"),
        ("https://localhost/hook", "callback_url_forbidden"),
        ("https://hooks.nowhere.invalid/", "callback_url_unresolvable"),
        ("gopher://8.8.8.8/", "callback_url_invalid"),
    ]:
        response = client.post("/v1/jobs", json={"text": "Hello.", "voice_id": voice_id, "callback_url": url}, headers=me)
        assert_error(response, 422, code)
    with runtime.transaction() as session:
        assert session.scalars(select(Job).where(Job.tenant_id == tenant_id)).all() == []


def cancel_with_callback(runtime: Runtime, url: str) -> uuid.UUID:
    """A job with this callback URL, cancelled: its job.cancelled delivery runs after commit
    (inline, embedded mode), with the settings as they are now. The job's rows are written in a
    plain session, whose after-commit work (its stage chain) is not run."""
    with runtime.sessions() as session, session.begin():
        job_id = factories.running_job(session, runtime, ["One."], callback_url=url).id
    with runtime.transaction() as session:
        assert lifecycle.cancel_job(session, runtime, job_id)
    return job_id


def test_delivery_checks_the_address_again_and_connects_to_it(pg_url: str, tmp_path: Path, receiver: WebhookReceiver) -> None:
    runtime = Runtime(
        embedded_settings(
            pg_url, tmp_path, callback_allow_http=True, callback_resolve=f"hooks.example.test={PUBLIC}",
            webhook_max_attempts=5,
        )  # fmt: skip
    )
    runtime.celery
    url = f"http://hooks.example.test:{receiver.port}/hook"
    try:
        # At submission the name resolves to a public address: accepted.
        assert str(callbacks.check(url, runtime.settings).address) == PUBLIC
        # By delivery time it resolves to loopback (rebinding): refused, no connection, no retry.
        runtime.settings.callback_resolve = "hooks.example.test=127.0.0.1"
        job_id = cancel_with_callback(runtime, url)
        with runtime.transaction() as session:
            delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
            attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)).all()
            assert delivery.status == "failed" and delivery.attempts == 1
            assert len(attempts) == 1 and attempts[0].status_code is None
            assert attempts[0].error and attempts[0].error.startswith("callback_url_forbidden")
        assert receiver.calls == []

        # Where the deployment allows loopback, the delivery goes to the address it checked:
        # "hooks.example.test" exists in no DNS, so only the pinned address can have reached
        # the receiver, and the request still names the host it was given.
        runtime.settings.callback_allowed_networks = "127.0.0.0/8"
        job_id = cancel_with_callback(runtime, url)
        assert len(receiver.calls) == 1
        call = receiver.calls[0]
        assert call.headers["Host"] == f"hooks.example.test:{receiver.port}" and call.path == "/hook"
        assert receiver.json_calls()[0]["data"]["job"]["id"] == str(job_id)
        with runtime.transaction() as session:
            delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).one()
            assert delivery.status == "delivered"
    finally:
        runtime.close()
