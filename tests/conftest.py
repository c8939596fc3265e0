"""Fixtures on real services. PostgreSQL and Redis must be running (``.ci/run`` starts them);
when one is missing the tests that need it fail with a message saying so — they never skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from db.migrate import upgrade
from jobs.runtime import Runtime
from jobs.settings import Settings
from tests.support.services import (
    Cluster,
    S3Server,
    WebhookReceiver,
    create_database,
    distributed_env,
    drop_broker_keys,
    drop_database,
    free_port,
    redis_url,
    start_s3,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_REDIS_DB = 11
_ACTIVE_CLUSTERS: list[Cluster] = []


@pytest.fixture(autouse=True)
def _quality_gate_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test engine renders tones, which no real quality threshold passes: settings built in a
    test default to no gate; the gate's own tests set ``quality_gate`` explicitly."""
    monkeypatch.setenv("VOXMILL_QUALITY_GATE", "off")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head, dropped at the end of the session."""
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture()
def fresh_pg_url() -> Iterator[str]:
    """A database of its own for one test (distributed runs count rows)."""
    url = create_database()
    upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture()
def db_session(pg_url: str) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test; commits made by the
    code under test become savepoints."""
    engine = create_engine(pg_url)
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()
        engine.dispose()


@pytest.fixture()
def pg_runtime(pg_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        mode="embedded",
        database_url=pg_url,
        storage="local",
        storage_dir=tmp_path / "objects",
        engine="tests.support.engine",
        home=tmp_path,
    )
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    yield server
    server.stop()


@pytest.fixture()
def broker_url() -> str:
    return redis_url(TEST_REDIS_DB)


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture()
def cluster_factory(
    fresh_pg_url: str, broker_url: str, s3_server: S3Server, tmp_path: Path
) -> Iterator[object]:
    """Build a distributed cluster (API + worker pools as subprocesses) with extra settings."""
    clusters = _ACTIVE_CLUSTERS
    clusters.clear()

    def make(**overrides: str) -> Cluster:
        cluster = Cluster(env=distributed_env(fresh_pg_url, broker_url, s3_server, **overrides), log_dir=tmp_path)
        cluster.env["VOXMILL_HOME"] = str(tmp_path / "home")
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()
        drop_broker_keys(broker_url, cluster.env["VOXMILL_BROKER_KEY_PREFIX"])
    clusters.clear()


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """On failure of a distributed test, attach the subprocess logs to the report."""
    if call.when == "call" and call.excinfo is not None:
        for cluster in _ACTIVE_CLUSTERS:
            item.add_report_section("call", "voxmill processes", cluster.logs())
