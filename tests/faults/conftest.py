"""The fault suite's services: a private PostgreSQL cluster and redis-server (the shared ones on
5432/6379 are never stopped), a bucket of its own behind a TCP proxy on the session's S3 server,
and a factory of fault runs that cleans each one up. At the end of the session the table of
fault → jobs ok / lost / duplicated is printed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api_min.uploads import PreparedReference, prepare_reference
from jobs.settings import Settings
from tests.support.faults import (
    REPORTS,
    DeliveryReceiver,
    FaultRun,
    Placement,
    PrivatePostgres,
    PrivateRedis,
    TcpProxy,
    report_table,
)
from tests.support.netns import Host, HostNetwork
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


@dataclass
class HostRun:
    run: FaultRun
    host: Host
    ports: dict[str, int]  # service name -> the port a host reaches it on (what a partition cuts)


# Jobs per scenario between hosts: each starts a namespace, proxies and a pool of its own.
HOST_JOBS = 20


@pytest.fixture()
def host_fault_run(
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis,
    fault_s3: tuple[S3Server, TcpProxy],
    fault_voice: PreparedReference,
    tmp_path: Path,
) -> Iterator[Callable[..., HostRun]]:
    """``host_fault_run(name, queue, clock_offset_s=0, **env)``: a run whose ``queue`` pool lives
    on a host of its own (a network namespace) and reaches PostgreSQL, Redis, storage and the
    webhook receiver over a bridge, through proxies on the bridge's address; everything else
    runs on the test's host."""
    s3, s3_proxy = fault_s3
    network = HostNetwork()
    proxies: list[TcpProxy] = []
    receivers: list[DeliveryReceiver] = []

    def gateway_proxy(port: int) -> TcpProxy:
        proxy = TcpProxy(port, bind=network.gateway).start()
        proxies.append(proxy)
        return proxy

    def make(fault: str, queue: str, clock_offset_s: int = 0, **overrides: str) -> HostRun:
        host = network.add_host(queue, clock_offset_s)
        receiver = DeliveryReceiver().start()
        receivers.append(receiver)
        pg, broker, storage, hook = (
            gateway_proxy(private_pg.port), gateway_proxy(private_redis.port),
            gateway_proxy(s3_proxy.port), gateway_proxy(receiver.port),
        )
        overrides = {
            **FAST_RECOVERY,
            "VOXMILL_CALLBACK_ALLOWED_NETWORKS": f"127.0.0.0/8,{network.prefix}.0/24",
            **overrides,
        }
        run = FaultRun(
            fault, private_pg, private_redis, s3, s3_proxy, receiver, tmp_path, overrides,
            jobs=HOST_JOBS, callback_url=f"http://{network.gateway}:{hook.port}/hook",
        )
        env = run.cluster.env
        run.placements[queue] = Placement(
            wrapper=host.wrapper(),
            env={
                "VOXMILL_DATABASE_URL": env["VOXMILL_DATABASE_URL"].replace(
                    f"127.0.0.1:{private_pg.port}", f"{network.gateway}:{pg.port}"),
                "VOXMILL_BROKER_URL": env["VOXMILL_BROKER_URL"].replace(
                    f"127.0.0.1:{private_redis.port}", f"{network.gateway}:{broker.port}"),
                "VOXMILL_S3_ENDPOINT_URL": storage.endpoint,
                **host.environment(),
            },
        )
        _ACTIVE.append(run)
        run.start(fault_voice)
        ports = {"postgres": pg.port, "redis": broker.port, "storage": storage.port, "webhooks": hook.port}
        return HostRun(run, host, ports)

    yield make
    for run in _ACTIVE:
        run.close()
    _ACTIVE.clear()
    for proxy in proxies:
        proxy.stop()
    for receiver in receivers:
        receiver.stop()
    network.close()


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
