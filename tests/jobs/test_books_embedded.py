"""Books in embedded mode (SQLite, a local folder, every stage in-process with the test engine):
a 3-chapter Markdown book end to end through ``voxmill render``, the outputs checked against the
audio they describe; the render cache (L1, L2) serving a repeated phrase without the engine;
projects re-rendered on schedule and on voice, model or lexicon changes; the books API."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import soundfile
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from api_min.app import create_app
from api_min.routes.jobs import job_out
from api_min.uploads import prepare_reference
from db.migrate import upgrade
from db.models import Job, Project, RenderCacheEntry, Segment, utcnow
from infra.embedded import render
from jobs import cache, lifecycle
from jobs.books import BookRequest, submit_book
from jobs.projects import regenerate, update_project
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.submission import JobRequest, submit_job, submit_voice
from tests.support.books import (
    CHAPTER_TITLES,
    PARAGRAPHS,
    assert_cues_match_audio,
    epub_book,
    ffprobe_chapters,
    markdown_book,
    parse_cues,
)
from tests.support.speech import encode, speech_wav
from workers.post.audio import decode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def engine_calls(calls_dir: Path, stage: str = "gpt") -> list[str]:
    path = calls_dir / f"{stage}.log"
    return [line.split("\t", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture()
def calls_dir(tmp_path: Path) -> Path:
    path = tmp_path / "calls"
    path.mkdir()
    return path


@pytest.fixture()
def runtime(tmp_path: Path, calls_dir: Path) -> Iterator[Runtime]:
    settings = Settings(
        mode="embedded",
        home=tmp_path / "home",
        engine="tests.support.engine",
        engine_options_json=json.dumps({"calls_dir": str(calls_dir)}),
    )
    settings.home.mkdir()
    upgrade(settings.db_url)
    runtime = Runtime(settings)
    runtime.celery
    yield runtime
    runtime.close()


def tenant(runtime: Runtime) -> uuid.UUID:
    with runtime.transaction() as session:
        return lifecycle.default_tenant(session).id


def new_voice(runtime: Runtime, name: str = "narrator") -> uuid.UUID:
    samples, rate = speech_wav(REFERENCE_TEXT)
    prepared = prepare_reference(encode(samples, rate, "wav"), runtime.settings, REFERENCE_TEXT)
    voice = submit_voice(runtime, tenant(runtime), name, "en", prepared.transcript, prepared.payload, prepared.analysis)
    return voice.id


def test_markdown_book_rendered_end_to_end_with_the_cli(
    tmp_path: Path, calls_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    book = tmp_path / "tale.md"
    book.write_text(markdown_book(), encoding="utf-8")
    out = tmp_path / "out"
    common = dict(
        transcript=(EXAMPLES / "voice" / "sample.txt").read_text().strip(),
        language="en",
        out_dir=out,
        output_format="wav",
        home=tmp_path / "state",
        engine="tests.support.engine",
    )
    options = {"pauses": {"sentence": 0.3, "paragraph": 0.6, "chapter": 1.5}}
    monkeypatch.setenv("VOXMILL_ENGINE_OPTIONS_JSON", json.dumps({"calls_dir": str(calls_dir)}))
    assert render(str(book), EXAMPLES / "voice" / "sample.wav", options=options, **common) == 0  # type: ignore[arg-type]
    first_calls = engine_calls(calls_dir)
    printed = capsys.readouterr()
    assert f"→ {out}" in printed.out and str(out / "tale.m4b") in printed.out
    assert "segments" in printed.err  # the progress bar

    manifest = json.loads((out / "tale.manifest.json").read_text())
    segments = manifest["segments"]
    assert len(first_calls) == len(segments) and not any(s["reused"] for s in segments)
    assert [c["title"] for c in manifest["chapters"]] == CHAPTER_TITLES
    assert sorted(p.name for p in (out / "chapters").iterdir()) == ["001.wav", "002.wav", "003.wav"]

    # The M4B carries three chapters where the manifest says they start.
    for fmt in ("m4b", "mp3"):
        marks = ffprobe_chapters(out / f"tale.{fmt}")
        assert [m[2] for m in marks] == CHAPTER_TITLES
        for mark, chapter in zip(marks, manifest["chapters"], strict=True):
            assert abs(mark[0] - chapter["start_s"]) <= 0.002

    # Subtitles: one cue per segment, each where the audio has sound (50 ms), in every file.
    srt = parse_cues((out / "tale.srt").read_text())
    vtt = parse_cues((out / "tale.vtt").read_text())
    assert (out / "tale.vtt").read_text().startswith("WEBVTT")
    assert srt == vtt
    assert [c[2] for c in srt] == [s["text"] for s in segments]
    # Every cue is the text as written: per chapter, the cues give back its title and
    # paragraphs (pause markers aside) up to whitespace.
    for n, (title, paragraphs) in enumerate(zip(CHAPTER_TITLES, PARAGRAPHS, strict=True)):
        written = "".join(s["text"] for s in segments if s["chapter"] == n)
        source = title + "".join(re.sub(r"\[pause[^\]]*\]", "", p) for p in paragraphs)
        assert squeeze(written) == squeeze(source)
    for name in ("tale.wav", "tale.m4b", "tale.mp3"):
        samples, rate = decode((out / name).read_bytes())
        assert_cues_match_audio(srt, samples, rate)
    chapter_two, rate = soundfile.read(out / "chapters" / "002.wav")
    in_chapter = [(s["chapter_start_s"], s["chapter_end_s"], s["text"]) for s in segments if s["chapter"] == 1]
    assert_cues_match_audio(in_chapter, chapter_two, rate)
    # The explicit [pause 1.2s] is there: the silence after "… past the benches."
    benches = next(i for i, s in enumerate(segments) if s["text"].endswith("benches."))
    assert abs(segments[benches + 1]["start_s"] - segments[benches]["end_s"] - 1.2) < 0.002

    # Rendered again (the stored voice by name this time): nothing reaches the engine.
    again = dict(common, out_dir=tmp_path / "again")
    assert render(str(book), "sample", options=options, **again) == 0  # type: ignore[arg-type]
    assert engine_calls(calls_dir) == first_calls
    assert "(%d reused)" % len(segments) in capsys.readouterr().out
    assert (tmp_path / "again" / "tale.srt").read_text() == (out / "tale.srt").read_text()


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


HARD_BOOK = (
    "# One\n\n"
    'Dr. J. R. R. Tolkien paid $12.40 on Jan. 5. "Stop." She left. It rose 3.5% &amp; fell, see '
    "https://ex.am/ple. Is A<B --> C? Version 2.1.3 ships at 10:30 a.m.\n\n"
    "它涨了3.5%。他说：“我走了。”然后离开了。\n"
)
HARD_PARAGRAPHS = [
    'Dr. J. R. R. Tolkien paid $12.40 on Jan. 5. "Stop." She left. It rose 3.5% & fell, see '
    "https://ex.am/ple. Is A<B --> C? Version 2.1.3 ships at 10:30 a.m.",
    "它涨了3.5%。他说：“我走了。”然后离开了。",
]


@pytest.mark.parametrize("split", ["sentences", "punctuation"])
def test_subtitles_carry_exact_source_slices(runtime: Runtime, split: str) -> None:
    """SRT, WebVTT and the manifest show each segment as written (an exact slice of its
    paragraph, never cut inside a number, abbreviation or URL); the engine got the spoken form."""
    client = TestClient(create_app(runtime=runtime))
    new_voice(runtime, "narrator")
    response = client.post(
        "/v1/books",
        files={"file": ("hard.md", HARD_BOOK.encode(), "text/markdown")},
        data={"voice": "narrator", "format": "wav", "split": split, "language": "auto"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["status"] == "succeeded", response.text
    manifest = client.get(f"/v1/jobs/{job_id}/files/manifest").json()
    srt = parse_cues(client.get(f"/v1/jobs/{job_id}/files/srt").text)
    vtt = parse_cues(client.get(f"/v1/jobs/{job_id}/files/vtt").text)
    segments = manifest["segments"]
    captions = [s["text"] for s in segments]
    assert [c[2] for c in srt] == captions
    assert [html.unescape(c[2]) for c in vtt] == captions  # WebVTT escapes < & > and nothing else
    body = captions[1:]  # after the spoken chapter title
    paragraph, position = 0, 0
    for caption in body:
        found = HARD_PARAGRAPHS[paragraph].find(caption, position)
        if found < 0:
            paragraph, position = paragraph + 1, 0
            found = HARD_PARAGRAPHS[paragraph].find(caption)
        assert found >= 0 and not HARD_PARAGRAPHS[paragraph][position:found].strip(), (caption, position, found)
        position = found + len(caption)
    assert squeeze("".join(body)) == squeeze("".join(HARD_PARAGRAPHS))
    for kept in ("3.5%", "$12.40", "https://ex.am/ple.", "2.1.3", "J. R. R."):
        assert any(kept in c for c in captions), kept
    spoken = " ".join(s["spoken"] for s in segments)
    assert "Doctor J R R Tolkien" in spoken and "ex dot am slash ple" in spoken and "Jan." not in spoken


def counter(level: str, result: str) -> float:
    value = REGISTRY.get_sample_value("voxmill_cache_requests_total", {"cache": f"render_{level}", "result": result})
    return value or 0.0


def test_repeated_phrase_is_served_from_l1_and_l2_without_the_engine(runtime: Runtime, calls_dir: Path) -> None:
    owner = tenant(runtime)
    voice = new_voice(runtime)
    phrase = "Thank you for listening."
    cache.l1(runtime.settings).clear()

    def job(text: str) -> uuid.UUID:
        created, _ = submit_job(runtime, owner, JobRequest(text=text, voice_id=voice, language="en", split_method="english_period"))
        with runtime.transaction() as session:
            row = session.get(Job, created.id)
            assert row is not None and row.status == "succeeded", (row.status, row.error_message)
        return created.id

    job(phrase)
    assert engine_calls(calls_dir) == [phrase] and len(engine_calls(calls_dir, "sovits")) == 1

    l2_hits, l1_hits = counter("l2", "hit"), counter("l1", "hit")
    second = job(f"A new sentence here. {phrase}")  # L1 is empty: the phrase comes from L2
    assert engine_calls(calls_dir) == [phrase, "A new sentence here."]
    assert counter("l2", "hit") == l2_hits + 1 and counter("l1", "hit") == l1_hits

    third = job(phrase)  # now a hot phrase in this process: L1, no query
    assert counter("l1", "hit") == l1_hits + 1 and counter("l2", "hit") == l2_hits + 1
    assert len(engine_calls(calls_dir)) == 2 and len(engine_calls(calls_dir, "sovits")) == 2

    with runtime.transaction() as session:
        rows = session.scalars(select(Segment).where(Segment.job_id.in_([second, third]))).all()
        reused = [s for s in rows if s.text.strip() == phrase]
        assert len(reused) == 2 and all(s.status == "succeeded" and s.total_attempts == 0 for s in reused)
        entry = session.scalars(select(RenderCacheEntry).where(RenderCacheEntry.tenant_id == owner)).all()
        assert {e.hits for e in entry if e.audio_key == reused[0].audio_key} == {2}
    # The short-text path reads the bytes through L1 once they are there.
    data = cache.get_audio(runtime, owner, reused[0].content_key, len(phrase))
    assert data is not None and data == runtime.storage.get(reused[0].audio_key)
    # A render whose object is gone is stale, not a hit: it is rendered again.
    runtime.storage.delete(reused[0].audio_key)
    cache.l1(runtime.settings).clear()
    stale = counter("l2", "stale")
    job(phrase)
    assert counter("l2", "stale") == stale + 1 and engine_calls(calls_dir).count(phrase) == 2


def test_projects_rerender_only_what_is_stale(runtime: Runtime, calls_dir: Path) -> None:
    owner = tenant(runtime)
    voice = new_voice(runtime)
    source = markdown_book().encode()
    request = BookRequest(
        source=source, voice_id=voice, filename="tale.md", schedule_every_s=3600, options={"lexicon": {"ferry": "boat"}}
    )
    first, _ = submit_book(runtime, owner, request)
    segments = len(engine_calls(calls_dir))
    assert segments > 6 and any("boat" in c for c in engine_calls(calls_dir))

    def latest() -> Job:
        with runtime.transaction() as session:
            project = session.scalars(select(Project).where(Project.tenant_id == owner)).one()
            job = session.get(Job, project.last_job_id)
            assert job is not None
            return job

    assert regenerate(runtime).rendered == {}  # up to date, not due
    scheduled = regenerate(runtime, now=utcnow() + timedelta(hours=2))
    assert list(scheduled.rendered.values()) == ["scheduled"]
    assert latest().status == "succeeded" and latest().id != first.id
    assert len(engine_calls(calls_dir)) == segments  # nothing was stale
    assert regenerate(runtime, now=utcnow() + timedelta(hours=2)).rendered == {}  # next run is later now

    # A lexicon edit re-renders only the segments with the word.
    project_id = latest().project_id
    assert project_id is not None
    before = len(engine_calls(calls_dir))
    update_project(runtime, owner, project_id, {"options": {"lexicon": {"ferry": "ferry boat"}}})
    touched = engine_calls(calls_dir)[before:]
    assert touched and all("ferry boat" in c for c in touched) and latest().status == "succeeded"

    # A new voice makes every segment stale, at once.
    other = new_voice(runtime, "second")
    before = len(engine_calls(calls_dir))
    update_project(runtime, owner, project_id, {"voice_id": other})
    assert len(engine_calls(calls_dir)) - before == segments and latest().voice_id == other

    # A new model version: the next check re-renders everything, once.
    runtime.__dict__["model_version"] = "test-engine-2"
    before = len(engine_calls(calls_dir))
    assert list(regenerate(runtime).rendered.values()) == ["model version changed"]
    assert len(engine_calls(calls_dir)) - before == segments
    assert latest().model_version == "test-engine-2" and latest().status == "succeeded"
    assert regenerate(runtime).rendered == {}


def test_books_api(runtime: Runtime, calls_dir: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(runtime=runtime))
    voice = new_voice(runtime, "narrator")
    response = client.post(
        "/v1/books",
        files={"file": ("small.epub", epub_book(), "application/epub+zip")},
        data={"voice": "narrator", "format": "m4a", "options": json.dumps({"pauses": {"chapter": 1.0}})},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["project_id"]
    assert [c["title"] for c in body["chapters"]] == CHAPTER_TITLES
    assert all(c["fraction"] == 1.0 and c["segments_total"] > 0 for c in body["chapters"])
    assert sum(c["segments_total"] for c in body["chapters"]) == body["progress"]["segments_total"]
    kinds = {a["kind"] for a in body["artifacts"] if a["segment_index"] is None}
    assert kinds == {"audio", "m4b", "mp3", "manifest", "srt", "vtt", "chapter-001", "chapter-002", "chapter-003"}
    m4b = client.get(f"/v1/jobs/{body['id']}/files/m4b")
    assert m4b.status_code == 200 and m4b.headers["content-type"] == "audio/mp4"
    (tmp_path / "b.m4b").write_bytes(m4b.content)
    assert [m[2] for m in ffprobe_chapters(tmp_path / "b.m4b")] == CHAPTER_TITLES
    manifest = client.get(f"/v1/jobs/{body['id']}/files/manifest").json()
    assert [s["text"] for s in manifest["segments"]][1] == PARAGRAPHS[0][0]
    audio = client.get(f"/v1/jobs/{body['id']}/audio")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mp4"
    assert client.get(f"/v1/jobs/{body['id']}/files/nothing").json()["error"]["code"] == "file_not_found"

    # The same book again: every segment reused, nothing synthesised.
    calls = len(engine_calls(calls_dir))
    again = client.post("/v1/books", files={"file": ("small.epub", epub_book())}, data={"voice": str(voice)}).json()
    assert again["progress"]["segments_reused"] == again["progress"]["segments_total"]
    assert all(s["reused"] for s in again["segments"]) and len(engine_calls(calls_dir)) == calls

    project = client.get(f"/v1/projects/{body['project_id']}").json()
    assert project["name"] == "small" and project["last_job_id"] == again["id"]
    patched = client.patch(f"/v1/projects/{body['project_id']}", json={"schedule_every_s": 600, "render": False})
    assert patched.status_code == 200 and patched.json()["schedule_every_s"] == 600
    rendered = client.post(f"/v1/projects/{body['project_id']}/render")
    assert rendered.status_code == 202 and rendered.json()["status"] == "succeeded"

    def error(response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code

    error(client.post("/v1/books", files={"file": ("a.md", b"# A\n\nx.")}, data={"voice": "nobody"}), 404, "voice_not_found")
    error(
        client.post("/v1/books", files={"file": ("a.md", b"# A\n\nx.")}, data={"voice": "narrator", "options": '{"pauses": {"x": 1}}'}),
        422,
        "invalid_book_options",
    )
    error(client.post("/v1/books", files={"file": ("a.zip", b"PK\x03\x04zzzz")}, data={"voice": "narrator"}), 415, "unsupported_source_format")
    error(client.post("/v1/books", files={"file": ("a.md", b"  ")}, data={"voice": "narrator"}), 422, "empty_text")
    error(client.patch(f"/v1/projects/{body['project_id']}", json={"schedule_every_s": 5}), 422, "invalid_schedule")
    error(client.get(f"/v1/projects/{uuid.uuid4()}"), 404, "project_not_found")
    # A source that does not parse fails its job with a stable code.
    broken = client.post(
        "/v1/books", files={"file": ("b.epub", b"x")}, data={"voice": "narrator", "source_format": "epub"}
    ).json()
    assert broken["status"] == "failed" and broken["error"]["code"] == "invalid_source"
    with runtime.transaction() as session:
        assert job_out(runtime, uuid.UUID(body["id"]), tenant(runtime)).chapters is not None
        assert session.get(Job, uuid.UUID(body["id"])) is not None
    chapter, rate = decode(client.get(f"/v1/jobs/{body['id']}/files/chapter-001").content, "m4a")
    assert len(chapter) > rate
