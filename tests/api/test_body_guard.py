"""The request body guard (api_min.limits) on the server production runs: ``voxmill api`` as a
subprocess (uvicorn with httptools and uvloop, distributed mode on PostgreSQL, Redis and moto S3),
spoken to through a raw socket so that nothing between the test and the server buffers, retries
or closes on its own.

What is measured: the bytes this client managed to send after it had read the server's early
answer, until the server's close stopped it. Those are bytes the server's kernel accepted into
its buffers, not bytes the API read, so they are bounded by socket buffers (a few MiB on
loopback) when the server stops reading, and unbounded when it reads on."""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.services import Cluster, S3Server, distributed_env, redis_url, wait_for

DEADLINE_S = 2.0
MAX_REQUEST = 64 * 1024
CAP = 64 * 1024 * 1024  # a server still reading after this much is reading on without end
KERNEL_BUFFERS = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def server(pg_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Cluster]]:
    home = tmp_path_factory.mktemp("guard")
    env = distributed_env(
        pg_url,
        redis_url(11),
        s3_server,
        VOXMILL_HOME=str(home),
        VOXMILL_MAX_REQUEST_BYTES=str(MAX_REQUEST),
        VOXMILL_REQUEST_BODY_TIMEOUT_S=str(DEADLINE_S),
        VOXMILL_LOG_JSON="false",
    )
    cluster = Cluster(env=env, log_dir=home)
    base = cluster.api()
    yield base, cluster
    cluster.stop_all()


@dataclass
class Exchange:
    response: bytes
    sent_before: int  # body bytes sent before the answer was read
    sent_after: int  # body bytes the server's side accepted after the answer was read
    ended: str  # "reset" / "closed" by the server, "stalled" (not reading, not closed), "cap"
    seconds: float  # from the headers to the end

    @property
    def status(self) -> int:
        match = re.match(rb"HTTP/1\.1 (\d{3})", self.response)
        assert match, self.response[:200]
        return int(match.group(1))

    @property
    def headers(self) -> dict[str, str]:
        head = self.response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def exchange(base: str, head: str, body: Iterator[bytes], pace_s: float = 0.0, stall_s: float = 3.0) -> Exchange:
    """Send ``head`` then ``body`` (as fast as the server takes it, or one piece per ``pace_s``)
    while reading whatever the server answers; stop when the server closes or resets, when it
    stops taking bytes without closing, or at CAP bytes after its answer."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode("latin-1"))
    sock.setblocking(False)
    started = last_send = time.monotonic()
    response, pending = b"", b""
    before = after = 0
    ended = ""
    while not ended:
        now = time.monotonic()
        want_write = not pace_s or now - last_send >= pace_s
        readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 0.02)
        try:
            if readable:
                data = sock.recv(1 << 16)
                if not data:
                    ended = "closed"
                    break
                response += data
            if writable:
                pending = pending or next(body, b"")
                sent = sock.send(pending) if pending else 0
                pending = pending[sent:]
                if sent:
                    last_send = now
                if b"\r\n\r\n" in response:
                    after += sent
                else:
                    before += sent
        except (ConnectionResetError, BrokenPipeError):
            ended = "reset"
        if b"\r\n\r\n" in response and not ended:
            if after > CAP:
                ended = "cap"
            elif now - last_send > stall_s:
                ended = "stalled"
        if now - started > 60:
            ended = "timeout"
    sock.close()
    return Exchange(response, before, after, ended, time.monotonic() - started)


def endless(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def chunked(piece: bytes) -> Iterator[bytes]:
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    while True:
        yield frame


def request_head(path: str, *headers: str) -> str:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""])


def metric_count(base: str, route: str, status: int) -> float:
    pattern = f'voxmill_http_request_duration_seconds_count{{method="POST",route="{route}",status="{status}"}}'
    for line in httpx.get(f"{base}/metrics", timeout=60).text.splitlines():
        if line.startswith(pattern):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_declared_huge_body_is_refused_at_once_and_the_connection_closed(server: tuple[str, Cluster]) -> None:
    base, _ = server
    head = request_head("/v1/jobs", "Content-Type: application/json", f"Content-Length: {10 * 1024**3}")
    result = exchange(base, head, endless(b"x" * 65536))
    print(f"declared 10 GiB: {result.sent_before} bytes before the 413, {result.sent_after} after, ended by {result.ended}")
    assert result.status == 413 and b'"request_too_large"' in result.response
    assert result.headers.get("connection") == "close"
    assert result.ended in ("closed", "reset"), result
    assert result.sent_after < KERNEL_BUFFERS


def test_a_chunked_body_past_the_limit_is_refused_and_the_connection_closed(server: tuple[str, Cluster]) -> None:
    base, _ = server
    head = request_head("/v1/jobs", "Content-Type: application/json", "Transfer-Encoding: chunked")
    result = exchange(base, head, chunked(b"x" * 16384))
    print(f"chunked: {result.sent_before} bytes before the 413, {result.sent_after} after, ended by {result.ended}")
    assert result.status == 413 and b'"request_too_large"' in result.response
    assert result.headers.get("connection") == "close"
    assert result.ended in ("closed", "reset"), result
    assert result.sent_after < KERNEL_BUFFERS


def test_a_slow_sender_is_cut_off_at_the_deadline(server: tuple[str, Cluster]) -> None:
    base, _ = server
    head = request_head("/v1/jobs", "Content-Type: application/json", "Content-Length: 1000")
    result = exchange(base, head, endless(b"{"), pace_s=0.2, stall_s=30)  # 1000 bytes would take 200 s
    print(f"trickle: answered after {result.seconds:.2f} s (deadline {DEADLINE_S} s), {result.sent_before} bytes sent")
    assert result.status == 408 and b'"request_timeout"' in result.response
    assert result.headers.get("connection") == "close"
    assert result.ended in ("closed", "reset"), result
    assert result.seconds >= DEADLINE_S and result.sent_before < 1000


def test_an_early_answer_to_a_small_body_closes_but_a_read_body_keeps_alive(server: tuple[str, Cluster]) -> None:
    """A 404, or a 400 for a form without a boundary, before the body was read closes; a request
    whose body was read keeps the connection (two requests on one socket)."""
    base, _ = server
    for path, content_type, status in (
        ("/v1/nowhere", "application/json", 404),
        ("/v1/voices", "multipart/form-data", 400),
    ):
        head = request_head(path, f"Content-Type: {content_type}", "Content-Length: 60000")
        result = exchange(base, head, iter([b"x" * 4000] * 15), pace_s=0.05)
        assert result.status == status and result.headers.get("connection") == "close", result
        assert result.ended in ("closed", "reset")

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        body = b'{"text": "", "voice_id": "00000000-0000-0000-0000-000000000000"}'
        for _ in range(2):
            sock.sendall(request_head("/v1/jobs", "Content-Type: application/json", f"Content-Length: {len(body)}").encode() + body)
            answer = sock.recv(65536)
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            head, rest = answer.split(b"\r\n\r\n", 1)
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            while len(rest) < length:
                rest += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 422") and b"connection: close" not in head.lower()


@pytest.mark.parametrize("route", ["/v1/voices", "/v1/jobs", "/v1/books"])
def test_a_client_hanging_up_mid_upload_is_no_server_error(server: tuple[str, Cluster], route: str) -> None:
    base, cluster = server
    api = cluster.processes[0]
    # The server is shared by the module's tests (one of them answers a malformed form with 400):
    # what counts is what this hang-up adds.
    before = {status: metric_count(base, route, status) for status in (400, 499, 500)}
    if route == "/v1/jobs":
        head = request_head(route, "Content-Type: application/json", "Content-Length: 60000")
        partial = b'{"text": "' + b"a" * 30000
    else:
        boundary = "vxb0undary"
        head = request_head(route, f"Content-Type: multipart/form-data; boundary={boundary}", f"Content-Length: {1 << 20}")
        partial = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="voice"\r\n\r\nnarrator\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="{"audio" if route == "/v1/voices" else "file"}"; '
            f'filename="x.wav"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode() + b"\0" * 100_000
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + partial)
    time.sleep(0.3)
    sock.close()
    wait_for(lambda: metric_count(base, route, 499) > before[499], 10, "the hang-up to be counted as 499", 0.2)
    assert metric_count(base, route, 500) == before[500]
    assert metric_count(base, route, 400) == before[400]
    log = api.log()
    assert "Traceback" not in log and "unhandled error" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "client closed the connection" in log


def test_a_missing_key_is_refused_before_the_upload_is_read(
    pg_url: str, s3_server: S3Server, tmp_path: Path
) -> None:
    env = distributed_env(pg_url, redis_url(11), s3_server, VOXMILL_HOME=str(tmp_path), VOXMILL_AUTH_REQUIRED="true")
    cluster = Cluster(env=env, log_dir=tmp_path)
    try:
        base = cluster.api()
        size = 40 * 1024 * 1024  # under the upload cap: only the key decides
        head = request_head("/v1/voices", "Content-Type: multipart/form-data; boundary=b", f"Content-Length: {size}")
        result = exchange(base, head, endless(b"x" * 65536))
        print(f"no key, 40 MiB upload: {result.sent_before} bytes before the 401, {result.sent_after} after, {result.ended}")
        assert result.status == 401 and b'"unauthorized"' in result.response
        assert result.headers.get("connection") == "close"
        assert result.ended in ("closed", "reset"), result
        assert result.sent_before + result.sent_after < KERNEL_BUFFERS * 2
    finally:
        cluster.stop_all()
