"""The API in-process on real services, for the front-door tests: PostgreSQL (the session's
database, or one of the test's own), Redis as broker and rate-limit store under a key prefix of
its own, and S3 (moto) or a local folder. Tenants and keys are made through ``jobs.tenants``, as
``voxmill keys create`` makes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api_min.app import create_app
from db.models import Voice
from jobs import tenants
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support.services import S3Server, drop_broker_keys, unique_broker_prefix


def distributed_settings(
    pg_url: str, broker_url: str, home: Path, s3: S3Server | None = None, **overrides: Any
) -> Settings:
    """Distributed mode, as the API process runs it (no workers: enqueued work just waits)."""
    values: dict[str, Any] = {
        "mode": "distributed",
        "home": home,
        "database_url": pg_url,
        "broker_url": broker_url,
        "broker_key_prefix": unique_broker_prefix(),
        "engine": "tests.support.engine",
        "auth_required": True,
    }
    if s3 is not None:
        values.update(
            storage="s3",
            s3_endpoint_url=s3.endpoint,
            s3_bucket=s3.bucket,
            s3_access_key_id="test",
            s3_secret_access_key="test",
        )
    else:
        values.update(storage="local", storage_dir=home / "objects")
    values.update(overrides)
    return Settings(**values)


def embedded_settings(pg_url: str, home: Path, **overrides: Any) -> Settings:
    """Embedded mode on PostgreSQL: every task runs inline, so voices become ready and jobs
    finish inside the request that submits them."""
    values: dict[str, Any] = {
        "mode": "embedded",
        "home": home,
        "database_url": pg_url,
        "storage": "local",
        "storage_dir": home / "objects",
        "engine": "tests.support.engine",
        "auth_required": True,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def api(settings: Settings) -> Iterator[tuple[TestClient, Runtime, FastAPI]]:
    runtime = Runtime(settings)
    runtime.celery  # builds the app (eager in embedded mode) and registers every task
    app = create_app(runtime=runtime)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, runtime, app
    finally:
        if not settings.embedded:
            drop_broker_keys(settings.broker_url, settings.broker_key_prefix)
        runtime.close()


def new_tenant(runtime: Runtime, max_queued_jobs: int | None = None) -> uuid.UUID:
    with runtime.transaction() as session:
        return tenants.create_tenant(session, f"t-{uuid.uuid4().hex[:10]}", max_queued_jobs).id


def new_key(runtime: Runtime, tenant_id: uuid.UUID, name: str = "") -> dict[str, str]:
    """Headers carrying a fresh key of the tenant."""
    with runtime.transaction() as session:
        _, key = tenants.create_key(session, tenant_id, name)
    return {"Authorization": f"Bearer {key}"}


def voice_count(runtime: Runtime, tenant_id: uuid.UUID) -> int:
    with runtime.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(Voice).where(Voice.tenant_id == tenant_id)) or 0)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    return body
