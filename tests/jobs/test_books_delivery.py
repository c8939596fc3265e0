"""A book through the real pipeline (embedded: SQLite, a local folder, every stage in-process, the
test engine rendering real speech): every delivered audio file (chapter files, book.m4b, book.mp3,
the job's audio) meets the preset after decoding; an unchanged rerun reuses every stored output
and encodes nothing; an edit in one chapter rebuilds that chapter's file and the whole-book files,
nothing else."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile
from sqlalchemy import select

from api_min.uploads import prepare_reference
from db.migrate import upgrade
from db.models import Artifact, Job
from jobs import lifecycle
from jobs.books import BookRequest, submit_book
from jobs.runtime import Runtime
from jobs.settings import Settings
from jobs.submission import submit_voice
from tests.support.books import markdown_book
from tests.support.speech import SENTENCES, encode, speech_wav
from workers.post.audio import codecs, decode, integrated_loudness, true_peak_db

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
PARAGRAPHS = [
    ["The train was late again."],
    ["The ferry left at noon. Gulls followed it out."],
    ["The harbour lights came on."],
]
AUDIO_KINDS = ("chapter-001", "chapter-002", "chapter-003", "m4b", "mp3", "audio")
DECODE_AS = {"m4b": "m4a"}


@pytest.fixture()
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    samples, rate = speech_wav(SENTENCES[3])
    recording = tmp_path / "render.wav"
    soundfile.write(recording, samples, rate)
    # Every segment renders this recording (the test engine), at very different levels so that
    # levelling and delivery have work to do; "wall" adds hiss, so the edit below sounds different.
    options = {
        "speech_wav": str(recording),
        "gain_db_by_text": {"ferry": -20.0, "harbour": 9.0},
        "noise_by_text": {"wall": 25.0},
    }
    settings = Settings(
        mode="embedded",
        home=tmp_path / "home",
        engine="tests.support.engine",
        engine_options_json=json.dumps(options),
    )
    settings.home.mkdir()
    upgrade(settings.db_url)
    runtime = Runtime(settings)
    runtime.celery
    yield runtime
    runtime.close()


@pytest.fixture()
def voice(runtime: Runtime) -> uuid.UUID:
    samples, rate = speech_wav(REFERENCE_TEXT)
    prepared = prepare_reference(encode(samples, rate, "wav"), runtime.settings, REFERENCE_TEXT)
    with runtime.transaction() as session:
        tenant_id = lifecycle.default_tenant(session).id
    row = submit_voice(runtime, tenant_id, "narrator", "en", prepared.transcript, prepared.payload, prepared.analysis)
    return row.id


def render_book(runtime: Runtime, voice: uuid.UUID, paragraphs: list[list[str]]) -> dict[str, str]:
    """Submit the book (MP3, voice-over preset); its audio outputs: kind → storage key."""
    with runtime.transaction() as session:
        tenant_id = lifecycle.default_tenant(session).id
    request = BookRequest(
        source=markdown_book(paragraphs).encode(),
        voice_id=voice,
        filename="tale.md",
        output_format="mp3",
        split_method="english_period",
        params={"loudness_preset": "voice_over"},
    )
    job, _ = submit_book(runtime, tenant_id, request)
    with runtime.transaction() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "succeeded", (row and row.status, row and row.error_message)
        artifacts = session.execute(
            select(Artifact.kind, Artifact.storage_key).where(Artifact.job_id == job.id, Artifact.segment_id.is_(None))
        ).all()
    return {kind: key for kind, key in artifacts if kind in AUDIO_KINDS}


def test_every_book_file_meets_the_preset_and_unchanged_outputs_are_reused(runtime: Runtime, voice: uuid.UUID) -> None:
    first = render_book(runtime, voice, PARAGRAPHS)
    assert set(first) == set(AUDIO_KINDS) and first["audio"] == first["mp3"]
    for kind, key in first.items():
        samples, rate = decode(runtime.storage.get(key), DECODE_AS.get(kind, "mp3"))
        assert len(samples) > rate
        loudness, peak = integrated_loudness(samples, rate), true_peak_db(samples, rate)
        assert abs(loudness + 16.0) <= 0.5, (kind, loudness)
        assert peak <= -1.0, (kind, peak)

    # Unchanged: the same objects, not one encode.
    root = runtime.settings.storage_dir
    written = {kind: (root / key).stat().st_mtime_ns for kind, key in first.items()}
    before = codecs.ENCODES.copy()
    again = render_book(runtime, voice, PARAGRAPHS)
    assert again == first
    assert codecs.ENCODES == before, codecs.ENCODES - before
    assert {kind: (root / key).stat().st_mtime_ns for kind, key in again.items()} == written

    # One sentence edited in chapter 2: its chapter file and the whole-book files are rebuilt.
    edited = [PARAGRAPHS[0], ["The ferry left at noon. Gulls followed it out past the wall."], PARAGRAPHS[2]]
    before = codecs.ENCODES.copy()
    third = render_book(runtime, voice, edited)
    changed = {kind for kind in AUDIO_KINDS if third[kind] != first[kind]}
    assert changed == {"chapter-002", "m4b", "mp3", "audio"}
    for kind in ("chapter-001", "chapter-003"):
        assert (root / third[kind]).stat().st_mtime_ns == written[kind]
    encodes = codecs.ENCODES - before
    # One new segment (stored as FLAC), one MP3 chapter file and the two whole-book files, each
    # encoded as often as its delivery loop needed (at most MAX_ENCODES).
    assert encodes["flac24"] == 1 and set(encodes) == {"flac24", "mp3", "m4b"}, encodes
    assert 2 <= encodes["mp3"] <= 8 and 1 <= encodes["m4b"] <= 4, encodes
    for kind in ("chapter-002", "m4b", "mp3"):
        samples, rate = decode(runtime.storage.get(third[kind]), DECODE_AS.get(kind, "mp3"))
        assert abs(integrated_loudness(samples, rate) + 16.0) <= 0.5 and true_peak_db(samples, rate) <= -1.0
