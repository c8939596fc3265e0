"""``voxmill submit`` against a server that sends hostile file names: the real command, run as a
subprocess, talks to a tiny HTTP server on 127.0.0.1 whose artifacts' keys step outside
``--out``. It refuses, exits non-zero and writes nothing; honest names land inside ``--out``."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import REPO_ROOT, free_port

JOB_ID = "3f1b8a52-0000-4000-8000-000000000001"


def job(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": "succeeded",
        "progress": {"segments_total": 1, "segments_done": 1, "segments_failed": 0, "fraction": 1.0, "segments_reused": 0},
        "artifacts": [{"segment_index": None, "size_bytes": 5, "sha256": "0" * 64, "content_type": "x", **a} for a in artifacts],
    }


class FakeServer:
    """Answers POST /v1/books and GET /v1/jobs/{id} with a finished job whose artifacts are
    ``artifacts``, and every file with the bytes ``pwned``."""

    def __init__(self, artifacts: list[dict[str, Any]]) -> None:
        self.port = free_port()
        self.body = json.dumps(job(artifacts)).encode()
        self.downloads: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._answer(202, server.body)

            def do_GET(self) -> None:  # noqa: N802
                if "/files/" in self.path:
                    server.downloads.append(self.path)
                    self._answer(200, b"pwned")
                else:
                    self._answer(200, server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def serve() -> Iterator[Any]:
    servers: list[FakeServer] = []

    def start(artifacts: list[dict[str, Any]]) -> FakeServer:
        servers.append(FakeServer(artifacts))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def submit(server: FakeServer, workdir: Path) -> subprocess.CompletedProcess[str]:
    book = workdir / "book.txt"
    book.write_text("Chapter One\n\nHello there.\n")
    out = workdir / "a" / "b" / "out"
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", "submit", str(book), "--server", f"http://127.0.0.1:{server.port}",
         "--voice", "narrator", "--out", str(out), "--quiet"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "hostile",
    [
        {"kind": "chapter-001", "key": "../../x"},
        {"kind": "chapter-001", "key": "tenants/t/chapters/.."},
        {"kind": "notes", "key": "../../x"},
        {"kind": "notes", "key": "/etc/x"},
        {"kind": "audio", "key": "jobs/j/audio.mp3/../../../../x"},
        {"kind": "audio", "key": "jobs/j/audio.mp3\\..\\..\\x"},
    ],
)
def test_server_sent_keys_cannot_leave_out(serve: Any, tmp_path: Path, hostile: dict[str, str]) -> None:
    server = serve([{"kind": "manifest", "key": "jobs/j/manifest.json"}, hostile])
    result = submit(server, tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refusing the server's file names" in result.stderr
    assert files_under(tmp_path) == ["book.txt"]  # nothing inside --out either
    assert server.downloads == []


def test_honest_names_land_inside_out(serve: Any, tmp_path: Path) -> None:
    server = serve(
        [
            {"kind": "audio", "key": "jobs/j/audio.mp3"},
            {"kind": "chapter-001", "key": "jobs/j/chapters/001-one.mp3"},
            {"kind": "manifest", "key": "jobs/j/manifest.json"},
            {"kind": "notes", "key": "jobs/j/{stem.__class__}.txt"},  # not a format string
        ]
    )
    result = submit(server, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert files_under(tmp_path / "a" / "b" / "out") == [
        "book.manifest.json", "book.mp3", "chapters/001-one.mp3", "{stem.__class__}.txt",
    ]  # fmt: skip
