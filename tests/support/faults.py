"""Private, breakable services for the fault suite, and the bookkeeping of a fault run.

Other test runs share the machine's PostgreSQL (5432) and Redis (6379), so nothing here ever
stops those: the fault suite starts its own redis-server and its own PostgreSQL cluster
(initdb/pg_ctl in a temp dir, as the ``postgres`` user when run as root) on free ports, and
puts a TCP proxy in front of the S3 server so that "storage down" keeps moto's objects.
Everything started here is stopped and removed again, also when the run is interrupted.
"""

from __future__ import annotations

import atexit
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy import Engine, create_engine, select

from api_min.uploads import PreparedReference
from db.migrate import upgrade
from db.models import Artifact, Job, Segment, StateTransition, Tenant, WebhookAttempt, WebhookDelivery
from jobs import lifecycle
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.submission import submit_voice
from tests.support.services import (
    Cluster,
    Process,
    S3Server,
    ServiceMissing,
    distributed_env,
    free_port,
    wait_for,
)

_CLEANUPS: list[Callable[[], None]] = []


@atexit.register
def _cleanup_at_exit() -> None:
    """Last resort when a session dies without running its finalizers."""
    while _CLEANUPS:
        try:
            _CLEANUPS.pop()()
        except Exception:
            pass


# ----------------------------------------------------------------------------- Redis


class PrivateRedis:
    """A redis-server of our own, without persistence: a restart loses every key, as a Redis
    restarted without RDB/AOF does in production."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise ServiceMissing("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="voxmill-redis-"))
        self.popen: subprocess.Popen[bytes] | None = None
        _CLEANUPS.append(self.close)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        log = (self.dir / "redis.log").open("ab")
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(up, 30, "the private redis-server", interval=0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, every queued and unacked message gone."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.popen = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not candidates:
        found = shutil.which("pg_ctl")
        if found is None:
            raise ServiceMissing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        return Path(found).parent
    return candidates[-1].parent


class PrivatePostgres:
    """A PostgreSQL cluster of our own in a temp dir, on a free port, trust auth. initdb and the
    server refuse to run as root, so as root they run as the ``postgres`` user."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        # As root the server runs as postgres, who must reach the dir: /tmp, not a private TMPDIR.
        self.root = Path(tempfile.mkdtemp(prefix="voxmill-pg-", dir="/tmp" if self.as_root else None))
        self.data = self.root / "data"
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        _CLEANUPS.append(self.close)

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout.decode()}{result.stderr.decode()}"
                               f"\n{self.server_log()[-3000:]}")

    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "PrivatePostgres":
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "90",
                  "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: the server dies without a checkpoint, as in a crash or failover."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self) -> str:
        name = f"vx_fault_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"
        upgrade(url)
        return url

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port. ``stop()`` closes the listener and every open
    connection (clients see resets, then refused connections); ``start()`` listens again on the
    same port. What is behind it — moto's in-memory objects — is untouched."""

    def __init__(self, target_port: int, bind: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.bind = bind
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        _CLEANUPS.append(self.stop)

    @property
    def endpoint(self) -> str:
        return f"http://{self.bind}:{self.port}"

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.bind, self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for s in open_sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class HalfOpenServer:
    """Accepts TCP connections and never answers: a broker behind a dead NAT entry or a hung
    host, where a client waits for its socket timeout rather than being refused."""

    def __init__(self) -> None:
        self.port = free_port()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(128)  # the kernel completes handshakes; nobody ever reads
        _CLEANUPS.append(self.stop)

    def stop(self) -> None:
        self._listener.close()


# ----------------------------------------------------------------------------- webhook receiver


@dataclass
class Receipt:
    delivery_id: str
    job_id: str
    event: str
    answered: int | None  # None: the connection was dropped without an answer


@dataclass
class DeliveryReceiver:
    """Records every webhook POST. For the first ``down_for`` attempts of each delivery it drops
    the connection without answering, as a receiver that is down would; then it answers 200."""

    port: int = field(default_factory=free_port)
    down_for: int = 0
    receipts: list[Receipt] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "DeliveryReceiver":
        receiver = self
        lock = threading.Lock()
        seen: Counter[str] = Counter()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                delivery_id = self.headers.get("Voxmill-Delivery-Id", "")
                document = json.loads(body or b"{}")
                job_id = str(document.get("data", {}).get("job", {}).get("id", ""))
                with lock:
                    seen[delivery_id] += 1
                    down = seen[delivery_id] <= receiver.down_for
                    receiver.receipts.append(
                        Receipt(delivery_id, job_id, str(document.get("event")), None if down else 200)
                    )
                if down:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        _CLEANUPS.append(self.stop)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# ----------------------------------------------------------------------------- a fault run

JOBS_PER_RUN = 50
SEGMENTS_PER_JOB = 2
STAGE_KINDS = ("semantic", "waveform", "audio")


def job_text(run: str, index: int) -> str:
    """Two sentences, so two segments per job, unique per run and job (no shared objects)."""
    return f"Run {run} job {index} begins with a short line. Job {index} of run {run} ends here."


@dataclass
class FaultReport:
    fault: str
    jobs: int
    ok: int = 0
    lost: int = 0
    duplicated: int = 0
    redone: int = 0
    # The same delivery received again after a success (at-least-once: a worker lost between
    # the receiver's answer and recording it); receivers de-duplicate on Voxmill-Delivery-Id.
    webhook_resends: int = 0
    # Pools that exited by themselves and were started again, as systemd's Restart=always does
    # in production (kombu can end a worker with "Unrecoverable error" while Redis goes away).
    pool_restarts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


REPORTS: list[FaultReport] = []


def report_table(reports: list[FaultReport]) -> str:
    header = (
        "fault", "jobs", "ok", "lost", "duplicated", "redone segments", "webhook resends", "pool restarts", "seconds",
    )  # fmt: skip
    rows = [
        (
            r.fault,
            str(r.jobs),
            str(r.ok),
            str(r.lost),
            str(r.duplicated),
            str(r.redone),
            str(r.webhook_resends),
            str(r.pool_restarts),
            f"{r.seconds:.0f}",
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


@dataclass
class Submission:
    index: int
    key: str
    job_id: str | None = None
    answers: list[tuple[int | None, str]] = field(default_factory=list)  # (HTTP status, error code)


@dataclass
class Placement:
    """Where a pool runs when it is not on the test's own host: the command prefix that enters
    the other host, and the settings that differ there (service addresses, a skewed clock)."""

    wrapper: list[str]
    env: dict[str, str]


class FaultRun:
    """One scenario: its own database, broker key prefix, voxmill processes, voice and jobs
    (50 unless told), then the accounting of what came out."""

    def __init__(
        self,
        fault: str,
        pg: PrivatePostgres,
        redis_server: PrivateRedis,
        s3: S3Server,
        s3_proxy: TcpProxy,
        receiver: DeliveryReceiver,
        log_dir: Path,
        overrides: dict[str, str],
        jobs: int = JOBS_PER_RUN,
        placements: dict[str, Placement] | None = None,
        callback_url: str | None = None,
    ) -> None:
        self.fault = fault
        self.started = time.monotonic()
        self.pg = pg
        self.redis = redis_server
        self.s3 = s3
        self.receiver = receiver
        self.database_url = pg.create_database()
        self.tag = uuid.uuid4().hex[:6]
        env = distributed_env(self.database_url, redis_server.url, s3, **overrides)
        env["VOXMILL_S3_ENDPOINT_URL"] = s3_proxy.endpoint  # the voxmill processes go through the proxy
        env["VOXMILL_HOME"] = str(log_dir / "home")
        self.cluster = Cluster(env=env, log_dir=log_dir)
        self.db: Engine = create_engine(self.database_url, pool_pre_ping=True)
        self.jobs = jobs
        self.placements = placements or {}
        self.callback_url = callback_url or receiver.url
        self.submissions = [Submission(i, f"fault-{self.tag}-{i}") for i in range(jobs)]
        self.api = ""
        self.voice_id = ""
        self.workers: dict[str, Process] = {}
        self._submitter: threading.Thread | None = None
        # The supervisor: held while a pool is replaced on purpose, so it never restarts one twice.
        self.pool_lock = threading.RLock()
        self.pool_restarts: list[str] = []
        self._stop_supervising = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- processes

    def start(self, voice: "PreparedReference", supervise: bool = True) -> "FaultRun":
        """API, one pool per queue and beat, started side by side; then the voice, submitted as
        the API does with the reference analysed once per session (tests/jobs covers uploads).
        ``supervise``: pools that exit by themselves are started again (see ``_supervise``)."""
        self.cluster.api_port = free_port()
        started = {
            "api": self.cluster.start("api", "api", "--port", str(self.cluster.api_port)),
            "beat": self.cluster.start("beat", "beat"),
            **{q: self._start_pool(q) for q in ("gpt", "sovits", "post")},
        }
        for queue in ("gpt", "sovits", "post"):
            self._wait_ready(started[queue], "ready.")
            self.workers[queue] = started[queue]
        self._wait_ready(started["beat"], "Scheduler")
        if supervise:
            self._supervisor = threading.Thread(target=self._supervise, name="pool-supervisor", daemon=True)
            self._supervisor.start()
        self.api = f"http://127.0.0.1:{self.cluster.api_port}"
        wait_for(self._api_up, 90, "the API", interval=0.1)
        runtime = Runtime(Settings(**{k[8:].lower(): v for k, v in self.cluster.env.items() if k.startswith("VOXMILL_")}))
        try:
            with runtime.transaction() as session:
                tenant_id = lifecycle.default_tenant(session).id
            self.voice_id = str(
                submit_voice(runtime, tenant_id, "fault voice", "en", voice.transcript, voice.payload, voice.analysis).id
            )
        finally:
            runtime.close()
        wait_for(
            lambda: httpx.get(f"{self.api}/v1/voices/{self.voice_id}", timeout=10).json()["status"] == "ready",
            90,
            "the voice",
            interval=0.1,
        )
        return self

    def _wait_ready(self, process: Process, marker: str) -> None:
        try:
            wait_for(lambda: marker in process.log() or not process.alive(), 90, f"{process.name} to start", 0.1)
        except TimeoutError:
            raise TimeoutError(f"{process.name} did not start:\n{process.log()[-4000:]}") from None
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start:\n{process.log()[-4000:]}")

    def _api_up(self) -> bool:
        try:
            return httpx.get(f"{self.api}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_pool(self, queue: str, *extra: str, ready: str | None = None) -> Process:
        placement = self.placements.get(queue)
        if placement is None:
            return self.cluster.start(f"worker-{queue}", "worker", "--queue", queue, *extra, ready=ready)
        return self.cluster.start(
            f"worker-{queue}", "worker", "--queue", queue, *extra, ready=ready,
            wrapper=placement.wrapper, env={**self.cluster.env, **placement.env},
        )

    def replace_worker(self, queue: str) -> Process:
        with self.pool_lock:
            process = self._start_pool(queue, "--name", f"r{len(self.cluster.processes)}", ready="ready.")
            self.workers[queue] = process
            return process

    def _supervise(self) -> None:
        """Start again a pool that exited by itself, as the production units do
        (``Restart=always``); what a restart cost is in the report."""
        while not self._stop_supervising.wait(0.5):
            with self.pool_lock:
                if self._stop_supervising.is_set():
                    return
                for queue, process in list(self.workers.items()):
                    if not process.alive():
                        self.pool_restarts.append(f"{queue} (exit {process.popen.returncode})")
                        self.replace_worker(queue)

    # -- jobs

    def submit(self, submission: Submission, deadline_s: float = 120) -> None:
        """POST one job as a careful client does: the same Idempotency-Key on every try, retried
        on 503 and on a broken connection. A hung API fails the run (the client's timeout)."""
        body = {
            "text": job_text(self.tag, submission.index),
            "voice_id": self.voice_id,
            "language": "en",
            "callback_url": self.callback_url,
        }
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                response = httpx.post(
                    f"{self.api}/v1/jobs", json=body, headers={"Idempotency-Key": submission.key}, timeout=30
                )
            except httpx.TimeoutException as exc:
                submission.answers.append((None, f"timeout: {exc}"))
                raise AssertionError(f"the API hung on job {submission.index}: {exc}") from exc
            except httpx.TransportError as exc:
                submission.answers.append((None, type(exc).__name__))
            else:
                code = response.json().get("error", {}).get("code", "") if response.status_code >= 400 else ""
                submission.answers.append((response.status_code, code))
                if response.status_code in (200, 202):
                    submission.job_id = response.json()["id"]
                    return
                assert response.status_code == 503, response.text
            if time.monotonic() > give_up:
                raise AssertionError(f"job {submission.index} was never accepted: {submission.answers}")
            time.sleep(0.2)

    def submit_all(self, pause_s: float = 0.05) -> None:
        """Submit every job from a background thread, so a fault can hit while they arrive."""
        errors: list[BaseException] = []

        def run() -> None:
            for submission in self.submissions:
                try:
                    self.submit(submission)
                except BaseException as exc:  # reported by wait_submitted
                    errors.append(exc)
                    return
                time.sleep(pause_s)

        self._submit_errors = errors
        self._submitter = threading.Thread(target=run, daemon=True)
        self._submitter.start()

    def wait_submitted(self, timeout: float = 240) -> None:
        assert self._submitter is not None
        self._submitter.join(timeout)
        assert not self._submitter.is_alive(), "submitting the jobs did not finish"
        if self._submit_errors:
            raise self._submit_errors[0]

    def submitted(self) -> int:
        return sum(1 for s in self.submissions if s.job_id)

    def job_statuses(self) -> Counter[str]:
        with self.db.connect() as conn:
            return Counter(conn.execute(select(Job.status)).scalars().all())

    def wait_finished(self, timeout: float = 240) -> None:
        """Every job terminal and every webhook delivery settled."""

        def settled() -> bool:
            try:
                with self.db.connect() as conn:
                    statuses = Counter(conn.execute(select(Job.status)).scalars().all())
                    pending = conn.execute(
                        select(WebhookDelivery.id).where(WebhookDelivery.status == "pending")
                    ).first()
            except Exception:
                return False
            terminal = sum(statuses[s] for s in ("succeeded", "failed", "cancelled"))
            return terminal == self.jobs and sum(statuses.values()) == self.jobs and pending is None

        try:
            wait_for(settled, timeout, "every job to finish and its webhook to settle", interval=0.25)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: jobs {dict(self.job_statuses())}\n{self.unfinished()}") from None

    def unfinished(self) -> str:
        """The story of every job that is not terminal, for a failure message."""
        lines: list[str] = []
        with self.db.connect() as conn:
            jobs = conn.execute(select(Job).where(Job.status.not_in(["succeeded", "failed", "cancelled"]))).all()
            for job in jobs:
                lines.append(f"job {job.id} {job.status} attempts={job.attempts} updated={job.updated_at}")
                for seg in conn.execute(select(Segment).where(Segment.job_id == job.id)).all():
                    lines.append(
                        f"  segment {seg.index} {seg.id} {seg.status} attempts={seg.attempts} "
                        f"deadline={seg.stage_deadline_at} updated={seg.updated_at}"
                    )
                for t in conn.execute(
                    select(StateTransition).where(StateTransition.job_id == job.id).order_by(StateTransition.id)
                ).all():
                    lines.append(f"  {t.created_at} {t.entity} {t.entity_id} {t.from_status} -> {t.to_status} #{t.attempt}")
            for d in conn.execute(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all():
                lines.append(f"delivery {d.id} of job {d.job_id} attempts={d.attempts} next={d.next_attempt_at}")
        return "\n".join(lines)

    def segments_in(self, status: str) -> list[str]:
        with self.db.connect() as conn:
            return [str(i) for i in conn.execute(select(Segment.id).where(Segment.status == status)).scalars()]

    # -- accounting

    def account(self) -> FaultReport:
        """Count jobs ok / lost / duplicated, check every artifact against the bucket, and list
        anything orphaned. Recorded for the summary table, then returned for the assertions."""
        report = FaultReport(self.fault, self.jobs, pool_restarts=len(self.pool_restarts))
        problems = report.problems
        with self.db.connect() as conn:
            jobs = {str(j.id): j for j in conn.execute(select(Job)).all()}
            segments = conn.execute(select(Segment)).all()
            artifacts = conn.execute(select(Artifact)).all()
            transitions = conn.execute(select(StateTransition).where(StateTransition.entity == "segment")).all()
            deliveries = conn.execute(select(WebhookDelivery)).all()
            attempts = conn.execute(select(WebhookAttempt)).all()

        by_key = {str(j.idempotency_key): j for j in jobs.values()}
        segments_of: dict[str, list[Any]] = defaultdict(list)
        for s in segments:
            segments_of[str(s.job_id)].append(s)
        artifacts_of: dict[str, list[Any]] = defaultdict(list)
        for a in artifacts:
            artifacts_of[str(a.job_id)].append(a)
        moves: Counter[tuple[str, str | None, str]] = Counter(
            (str(t.entity_id), t.from_status, t.to_status) for t in transitions
        )
        redone = {k[0] for k, n in moves.items() if k[1] == k[2]}
        report.redone = len(redone)
        receipts_ok: Counter[str] = Counter(r.job_id for r in self.receiver.receipts if r.answered == 200)
        ids_ok: dict[str, set[str]] = defaultdict(set)
        for r in self.receiver.receipts:
            if r.answered == 200:
                ids_ok[r.job_id].add(r.delivery_id)
        deliveries_of: dict[str, list[Any]] = defaultdict(list)
        for d in deliveries:
            deliveries_of[str(d.job_id)].append(d)

        # The bucket: every object this run's tenant owns outside its voices.
        tenants = {j.tenant_id for j in jobs.values()}
        stored: dict[str, dict[str, Any]] = {}
        client = self.s3.client()
        for tenant in tenants:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.s3.bucket, Prefix=f"tenants/{tenant}/"
            ):
                for obj in page.get("Contents", []):
                    if "/voices/" not in obj["Key"]:
                        stored[obj["Key"]] = obj
        recorded_keys = {a.storage_key for a in artifacts}
        for key in sorted(set(stored) - recorded_keys):
            problems.append(f"orphaned object {key}")
        extra_jobs = set(jobs) - {str(by_key[s.key].id) for s in self.submissions if s.key in by_key}
        for job_id in extra_jobs:
            problems.append(f"job {job_id} was not submitted by this run")

        for sub in self.submissions:
            job = by_key.get(sub.key)
            if job is None or sub.job_id is None:
                report.lost += 1
                problems.append(f"job {sub.index}: no row (answers {sub.answers})")
                continue
            job_id = str(job.id)
            lost: list[str] = []
            dup: list[str] = []
            if job_id != sub.job_id:
                dup.append(f"answered {sub.job_id}, stored {job_id}")
            if job.status != "succeeded":
                lost.append(f"status {job.status} ({job.error_code}: {job.error_message})")
            segs = segments_of[job_id]
            if len(segs) != job.segments_total or len(segs) != SEGMENTS_PER_JOB:
                lost.append(f"{len(segs)} segments of {job.segments_total}")
            lost += [f"segment {s.index} {s.status}" for s in segs if s.status != "succeeded"]
            kinds = Counter((str(a.segment_id) if a.segment_id else None, a.kind) for a in artifacts_of[job_id])
            expected = Counter({**{(str(s.id), k): 1 for s in segs for k in STAGE_KINDS}, (None, "audio"): 1})
            if kinds != expected:
                missing, extra = expected - kinds, kinds - expected
                (lost if missing else dup).append(f"artifacts missing {dict(missing)} extra {dict(extra)}")
            for a in artifacts_of[job_id]:
                obj = stored.get(a.storage_key)
                if obj is None:
                    lost.append(f"artifact {a.kind} not in the bucket")
                    continue
                head = client.head_object(Bucket=self.s3.bucket, Key=a.storage_key)
                if head["ContentLength"] != a.size_bytes or head["Metadata"].get("sha256") != a.sha256:
                    lost.append(f"artifact {a.kind} does not match its row")
                if a.segment_id is None:
                    data = client.get_object(Bucket=self.s3.bucket, Key=a.storage_key)["Body"].read()
                    if hashlib.sha256(data).hexdigest() != a.sha256:
                        lost.append("job audio checksum differs")
            for s in segs:
                twice = [k for k, n in moves.items() if k[0] == str(s.id) and n > 1 and k[1] != k[2]]
                if twice:
                    dup.append(f"segment {s.index} changed twice: {twice}")
            job_deliveries = deliveries_of[job_id]
            if len(job_deliveries) != 1:
                (lost if not job_deliveries else dup).append(f"{len(job_deliveries)} webhook deliveries")
            elif job_deliveries[0].status != "delivered":
                lost.append(f"webhook {job_deliveries[0].status}")
            if len(ids_ok[job_id]) > 1:
                dup.append(f"webhook received as {len(ids_ok[job_id])} different deliveries")
            elif receipts_ok[job_id] == 0:
                lost.append("webhook never received")
            report.webhook_resends += receipts_ok[job_id] - len(ids_ok[job_id])
            if lost:
                report.lost += 1
            if dup:
                report.duplicated += 1
            if not lost and not dup:
                report.ok += 1
            problems += [f"job {sub.index}: {p}" for p in lost + dup]

        pending_attempts = {a.delivery_id for a in attempts} - {d.id for d in deliveries}
        if pending_attempts:
            problems.append(f"{len(pending_attempts)} webhook attempts without a delivery")
        report.seconds = time.monotonic() - self.started
        REPORTS.append(report)
        return report

    def webhook_attempts(self) -> dict[str, list[Any]]:
        with self.db.connect() as conn:
            rows = conn.execute(select(WebhookAttempt).order_by(WebhookAttempt.number)).all()
        attempts: dict[str, list[Any]] = defaultdict(list)
        for row in rows:
            attempts[str(row.delivery_id)].append(row)
        return attempts

    def reclaims(self, stage: str) -> set[str]:
        """Segments whose ``stage`` was claimed again (a redelivery after a lost worker)."""
        status = f"{stage}_running"
        with self.db.connect() as conn:
            rows = conn.execute(
                select(StateTransition.entity_id).where(
                    StateTransition.from_status == status, StateTransition.to_status == status
                )
            ).scalars()
            return {str(r) for r in rows}

    def logs(self) -> str:
        return "\n".join(p.log() for p in self.cluster.processes)

    def close(self) -> None:
        with self.pool_lock:
            self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=90)
        # SIGTERM to every process at once, then wait: a warm shutdown each, side by side.
        alive = [p for p in self.cluster.processes if p.alive()]
        for process in alive:
            try:
                signal_group(process, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in alive:
            try:
                process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.popen.wait(timeout=10)
        try:
            client = redis.Redis.from_url(self.redis.url)
            keys = list(client.scan_iter(match=f"{self.cluster.env['VOXMILL_BROKER_KEY_PREFIX']}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        except redis.exceptions.ConnectionError:
            pass
        # This run's objects (its tenants exist only in its database): leave the bucket as found.
        with self.db.connect() as conn:
            tenants = conn.execute(select(Tenant.id)).scalars().all()
        self.db.dispose()
        client = self.s3.client()
        keys = [
            obj["Key"]
            for tenant in tenants
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.s3.bucket, Prefix=f"tenants/{tenant}/"
            )
            for obj in page.get("Contents", [])
        ]
        for start in range(0, len(keys), 1000):
            client.delete_objects(
                Bucket=self.s3.bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]}
            )
        self.pg.drop_database(self.database_url)


def kill_mid_task(run: FaultRun, queue: str, tries: int = 6) -> list[str]:
    """kill -9 the queue's pool while the database shows a segment in its stage, and return the
    segments it held: those still ``<queue>_running`` right after the kill, when no live worker
    of that pool exists to move them. A kill that landed between two tasks is retried with a
    fresh pool; the replacement pool is left running."""
    status = f"{queue}_running"
    for _ in range(tries):
        wait_for(lambda: run.segments_in(status), 120, f"a segment in {status}", interval=0.02)
        with run.pool_lock:
            run.workers[queue].kill9()
            held = run.segments_in(status)
            run.replace_worker(queue)
        if held:
            return held
    raise AssertionError(f"no kill of the {queue} pool landed mid-task in {tries} tries")


def signal_group(process: Process, sig: int) -> None:
    os.killpg(process.popen.pid, sig)
