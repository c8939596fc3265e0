"""The fault suite's services: a private PostgreSQL cluster and redis-server (the shared ones on
5432/6379 are never stopped), a bucket of its own behind a TCP proxy on the session's S3 server,
and a factory of fault runs that cleans each one up. At the end of the session the table of
fault → jobs ok / lost / duplicated is printed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api_min.uploads import PreparedReference, prepare_reference
from jobs.settings import Settings
from tests.support.faults import (
    REPORTS,
    DeliveryReceiver,
    FaultRun,
    PrivatePostgres,
    PrivateRedis,
    TcpProxy,
    report_table,
)
from tests.support.services import S3Server
from tests.support.speech import encode, speech_wav

_ACTIVE: list[FaultRun] = []

# Short sweeps and restore scans so that a scenario recovers in seconds, not minutes; the
# product defaults (30 s, 120 s, 10 s) are what production runs.
FAST_RECOVERY = {
    "VOXMILL_SWEEP_INTERVAL_S": "1.5",
    "VOXMILL_SWEEP_STALE_AFTER_S": "4",
    "VOXMILL_BROKER_RESTORE_INTERVAL_S": "1",
    "VOXMILL_BROKER_VISIBILITY_TIMEOUT_S": "60",
    "VOXMILL_BROKER_OUTAGE_BACKOFF_S": "2",
    "VOXMILL_LOG_LEVEL": "INFO",
    # Each of a job's two sentences becomes a segment of its own (tests/support/faults.job_text).
    "VOXMILL_SEGMENT_MAX_CHARS": "60",
}


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def fault_s3(s3_server: S3Server) -> Iterator[tuple[S3Server, TcpProxy]]:
    """A bucket of the suite's own on the session's S3 server, and a proxy in front of it."""
    bucket = S3Server(endpoint=s3_server.endpoint, bucket=f"voxmill-faults-{uuid.uuid4().hex[:8]}", server=None)
    bucket.client().create_bucket(Bucket=bucket.bucket)
    proxy = TcpProxy(int(s3_server.endpoint.rsplit(":", 1)[1])).start()
    yield bucket, proxy
    proxy.stop()
    client = bucket.client()
    for key in bucket.keys():
        client.delete_object(Bucket=bucket.bucket, Key=key)
    client.delete_bucket(Bucket=bucket.bucket)


@pytest.fixture(scope="session")
def fault_voice() -> PreparedReference:
    """Real speech, analysed and cut by the API's own upload code, once for the suite."""
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    samples, rate = speech_wav(text)
    return prepare_reference(encode(samples, rate, "wav"), Settings(), text)


@pytest.fixture()
def fault_run(
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis,
    fault_s3: tuple[S3Server, TcpProxy],
    fault_voice: PreparedReference,
    tmp_path: Path,
) -> Iterator[Callable[..., FaultRun]]:
    """``fault_run(name, receiver=None, supervise=True, **env)``: a started run (processes,
    voice), closed after. ``supervise=False`` leaves a pool that exits down, for tests of exits."""
    s3, proxy = fault_s3
    receivers: list[DeliveryReceiver] = []

    def make(fault: str, receiver: DeliveryReceiver | None = None, supervise: bool = True, **overrides: str) -> FaultRun:
        if receiver is None:
            receiver = DeliveryReceiver().start()
            receivers.append(receiver)
        run = FaultRun(fault, private_pg, private_redis, s3, proxy, receiver, tmp_path, {**FAST_RECOVERY, **overrides})
        _ACTIVE.append(run)
        return run.start(fault_voice, supervise)

    yield make
    for run in _ACTIVE:
        run.close()
    _ACTIVE.clear()
    for receiver in receivers:
        receiver.stop()


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    if call.when == "call" and call.excinfo is not None:
        for run in _ACTIVE:
            item.add_report_section("call", "voxmill processes", run.cluster.logs())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.write_sep("=", "faults: jobs ok / lost / duplicated")
        terminalreporter.write_line(report_table(REPORTS))
        for report in REPORTS:
            for problem in report.problems[:10]:
                terminalreporter.write_line(f"  {report.fault}: {problem}")
