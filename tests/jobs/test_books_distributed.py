"""A book on the real parts: HTTP API → PostgreSQL → Redis → three worker pools → S3 (moto).
Rendered end to end; the workers killed halfway and restarted, the book resubmitted: only the
segments that had not finished are synthesised. Then one paragraph is edited and the book
submitted again with ``voxmill submit``: only that paragraph's segments are synthesised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Segment
from tests.jobs.test_distributed import create_voice, wait_job
from tests.support.books import (
    CHAPTER_TITLES,
    PARAGRAPHS,
    assert_cues_match_audio,
    ffprobe_chapters,
    markdown_book,
    parse_cues,
)
from tests.support.services import REPO_ROOT, Cluster, wait_for
from workers.post.audio import decode


def calls(calls_dir: Path, stage: str) -> list[str]:
    path = calls_dir / f"{stage}.log"
    return [line.split("\t", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def submit(api: str, source: str, voice: str) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/v1/books",
        files={"file": ("tale.md", source.encode())},
        data={"voice": voice, "options": json.dumps({"pauses": {"chapter": 1.0}})},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_book_killed_halfway_resumes_and_an_edit_rerenders_one_paragraph(
    cluster_factory: Any, s3_server: Any, tmp_path: Path
) -> None:
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    cluster: Cluster = cluster_factory(
        VOXMILL_ENGINE_OPTIONS_JSON=json.dumps({"calls_dir": str(calls_dir), "sovits_delay_s": 0.4}),
        VOXMILL_BROKER_VISIBILITY_TIMEOUT_S="4",
    )
    pools = [cluster.worker("gpt"), cluster.worker("sovits"), cluster.worker("post")]
    api = cluster.api()
    voice_id = create_voice(api)
    engine = create_engine(cluster.env["VOXMILL_DATABASE_URL"])
    source = markdown_book()

    first = submit(api, source, voice_id)

    def finished() -> list[Segment]:
        with Session(engine) as session:
            return list(session.scalars(select(Segment).where(Segment.job_id == first["id"], Segment.status == "succeeded")))

    wait_for(lambda: len(finished()) >= 3, 90, "three finished segments")
    for process in pools:
        process.kill9()
    done_before = {s.content_key for s in finished()}
    with Session(engine) as session:
        planned = list(session.scalars(select(Segment).where(Segment.job_id == first["id"]).order_by(Segment.index)))
    unfinished = sorted(s.text for s in planned if s.content_key not in done_before)
    assert unfinished and len(done_before) < len(planned)
    synthesised = len(calls(calls_dir, "gpt")), len(calls(calls_dir, "sovits"))

    # Resubmitted while the workers are down: the unfinished render is superseded (cancelled).
    second = submit(api, source, voice_id)
    assert httpx.get(f"{api}/v1/jobs/{first['id']}").json()["status"] == "cancelled"
    for queue in ("gpt", "sovits", "post"):
        cluster.worker(queue, "--name", "restarted")
    body = wait_job(api, second["id"], timeout=180)
    assert body["status"] == "succeeded", body
    assert body["progress"]["segments_reused"] == len(done_before)
    assert sorted(calls(calls_dir, "gpt")[synthesised[0] :]) == unfinished
    assert len(calls(calls_dir, "sovits")) - synthesised[1] == len(unfinished)
    assert [c["title"] for c in body["chapters"]] == CHAPTER_TITLES
    assert all(c["fraction"] == 1.0 for c in body["chapters"])

    # The outputs, read back from the S3 server: an M4B with three chapters, subtitles that
    # match its audio within 50 ms.
    files = {a["kind"]: a["key"] for a in body["artifacts"] if a["segment_index"] is None}
    bucket = s3_server.client()

    def fetch(kind: str) -> bytes:
        data: bytes = bucket.get_object(Bucket=s3_server.bucket, Key=files[kind])["Body"].read()
        return data

    (tmp_path / "tale.m4b").write_bytes(fetch("m4b"))
    assert [m[2] for m in ffprobe_chapters(tmp_path / "tale.m4b")] == CHAPTER_TITLES
    cues = parse_cues(fetch("srt").decode())
    samples, rate = decode(fetch("m4b"))
    assert_cues_match_audio(cues, samples, rate)
    assert httpx.get(f"{api}/v1/jobs/{second['id']}/files/m4b").content == fetch("m4b")

    # One paragraph edited, submitted with the CLI: only its segments are synthesised.
    edited = [list(chapter) for chapter in PARAGRAPHS]
    edited[1][1] = "Halfway across, the wind turned warm and everyone stayed on deck."
    book = tmp_path / "tale.md"
    book.write_text(markdown_book(edited), encoding="utf-8")
    before = len(calls(calls_dir, "gpt"))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "submit", str(book), "--server", api, "--voice", voice_id,
         "--format", "mp3", "--options", json.dumps({"pauses": {"chapter": 1.0}}), "--out", str(out), "--quiet"],
        cwd=REPO_ROOT,
        env={**cluster.env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert calls(calls_dir, "gpt")[before:] == [edited[1][1]]
    assert str(out / "tale.m4b") in result.stdout and (out / "chapters" / "002.mp3").is_file()
    assert [m[2] for m in ffprobe_chapters(out / "tale.m4b")] == CHAPTER_TITLES
    new_cues = parse_cues((out / "tale.srt").read_text())
    assert [c[2] for c in new_cues] == [c[2] if c[2] != PARAGRAPHS[1][1] else edited[1][1] for c in cues]
    engine.dispose()
