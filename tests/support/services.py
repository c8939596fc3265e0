"""Real services for tests: a throw-away PostgreSQL database, a Redis database, an S3 server
(moto's standalone server on 127.0.0.1), a webhook receiver, and voxmill's own processes (API,
worker pools, beat) started as subprocesses. A missing service is a failure, never a skip."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("VOXMILL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("VOXMILL_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("VOXMILL_TEST_REDIS_PORT", "6379"))


class ServiceMissing(RuntimeError):
    """A service the tests need is not running; CI must start it (see .ci/run)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- PostgreSQL


def create_database() -> str:
    import psycopg

    name = f"vx_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise ServiceMissing(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}") from exc
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------- Redis


def redis_url(db: int) -> str:
    """A Redis URL, checked reachable. Test runs share the server: each cluster gets its own
    broker key prefix (``unique_broker_prefix``) instead of a database of its own."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise ServiceMissing(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}") from exc
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def unique_broker_prefix() -> str:
    return f"vxtest-{uuid.uuid4().hex[:10]}:"


def drop_broker_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# ----------------------------------------------------------------------------- S3 (moto)


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    server: Any

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            obj["Key"] for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix) for obj in page.get("Contents", [])
        )

    def stop(self) -> None:
        self.server.stop()


def start_s3(port: int | None = None) -> S3Server:
    from moto.server import ThreadedMotoServer

    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=f"voxmill-{uuid.uuid4().hex[:8]}", server=server)
    wait_for(lambda: _port_open(port), 10, "the S3 server")
    s3.client().create_bucket(Bucket=s3.bucket)
    return s3


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ----------------------------------------------------------------------------- webhook receiver


@dataclass
class ReceivedCall:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST. ``fail_first`` answers 503 to the
    first N calls; ``status`` is what it answers after that."""

    port: int
    calls: list[ReceivedCall] = field(default_factory=list)
    fail_first: int = 0
    status: int = 200
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                answer = 503 if len(receiver.calls) < receiver.fail_first else receiver.status
                receiver.calls.append(ReceivedCall(self.path, dict(self.headers.items()), body, answer))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def json_calls(self) -> list[dict[str, Any]]:
        return [json.loads(c.body) for c in self.calls]


# ----------------------------------------------------------------------------- voxmill processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group: the worker and any pool children, no cleanup."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@dataclass
class Cluster:
    """Environment for voxmill processes in distributed mode, and the processes started."""

    env: dict[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)
    api_port: int | None = None

    def start(
        self,
        name: str,
        *args: str,
        ready: str | None = None,
        timeout: float = 60,
        wrapper: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Process:
        """``wrapper`` runs the process through another command (``ip netns exec NS``: on
        another host); ``env`` replaces the cluster's environment for this process."""
        log_path = self.log_dir / f"{name}-{len(self.processes)}.log"
        handle = log_path.open("wb")
        popen = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "infra.cli", *args],
            cwd=REPO_ROOT,
            env=self.env if env is None else env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        process = Process(name, popen, log_path)
        self.processes.append(process)
        if ready:
            try:
                wait_for(
                    lambda: ready in process.log() or not process.alive(), timeout, f"{name} to be ready", interval=0.1
                )
            except TimeoutError:
                raise TimeoutError(f"{name} did not start:\n{process.log()[-4000:]}") from None
            if not process.alive():
                raise RuntimeError(f"{name} exited during start:\n{process.log()[-4000:]}")
        return process

    def worker(self, queue: str, *extra: str) -> Process:
        return self.start(f"worker-{queue}", "worker", "--queue", queue, *extra, ready="ready.")

    def api(self) -> str:
        self.api_port = free_port()
        self.start("api", "api", "--port", str(self.api_port))
        base = f"http://127.0.0.1:{self.api_port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the API", interval=0.1)
        return base

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log()[-3000:]}" for p in self.processes)


def distributed_env(
    database_url: str,
    broker_url: str,
    s3: S3Server,
    **overrides: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXMILL_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
            "VOXMILL_MODE": "distributed",
            "VOXMILL_DATABASE_URL": database_url,
            "VOXMILL_BROKER_URL": broker_url,
            "VOXMILL_BROKER_KEY_PREFIX": unique_broker_prefix(),
            "VOXMILL_STORAGE": "s3",
            "VOXMILL_S3_ENDPOINT_URL": s3.endpoint,
            "VOXMILL_S3_BUCKET": s3.bucket,
            "VOXMILL_S3_ACCESS_KEY_ID": "test",
            "VOXMILL_S3_SECRET_ACCESS_KEY": "test",
            "VOXMILL_ENGINE": "tests.support.engine",
            "VOXMILL_WEBHOOK_SECRET": "test-secret",
            "VOXMILL_WEBHOOK_BACKOFF_BASE_S": "0.2",
            "VOXMILL_WEBHOOK_BACKOFF_MAX_S": "1",
            "VOXMILL_TASK_RETRY_BACKOFF_S": "0.2",
            "VOXMILL_TASK_RETRY_BACKOFF_MAX_S": "2",
            "VOXMILL_LOG_LEVEL": "INFO",
            # The test engine's tones would fail any real quality threshold, and scoring every
            # segment of every cluster costs CPU the suite shares: the gate's own tests turn it on.
            "VOXMILL_QUALITY_GATE": "off",
            # No worker exporters unless a test asks (fixed ports would clash between clusters).
            "VOXMILL_METRICS_PORT": "0",
            # The webhook receiver listens on http://127.0.0.1.
            "VOXMILL_CALLBACK_ALLOW_HTTP": "true",
            "VOXMILL_CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
    )
    env.update(overrides)
    return env
