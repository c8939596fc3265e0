"""Assembling a book on the post queue: each chapter from its finished segments (levelled as one
programme, the planned silence after each segment), one file per chapter in the job's format,
the whole book as an M4B and an MP3 with chapter markers and in the job's format, a manifest
with every segment's timing, and SRT/WebVTT subtitles from those timings.

Timings are counted in samples of the assembled audio, so they are exact in the lossless files;
the M4B and MP3 carry the encoder's delay in their headers (MP4 edit list, LAME tag), which
decoders honour, so they line up there too. Chapters are levelled with 1 dB of headroom under the
target's true-peak ceiling because every book is also delivered in lossy formats.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from db.models import Segment
from jobs import lifecycle
from jobs.engine import Waveform
from jobs.errors import PermanentJobError
from jobs.keys import job_object_key
from jobs.runtime import Runtime
from jobs.storage import StoredObject
from workers.post.audio import encode, get_format, normalize_chapter, resample
from workers.post.audio.chapters import BOOK_FORMATS, ChapterMark, encode_book
from workers.post.subtitles import Cue, srt, webvtt
from workers.post.tasks import FORMAT_NAMES

LOSSY_HEADROOM_DB = 1.0


@dataclass
class BookOutputs:
    audio: StoredObject
    extra: dict[str, StoredObject] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    index: int
    chapter: int
    text: str
    caption: str
    pause_after_s: float
    audio_key: str
    content_key: str
    reused: bool


def _rows(runtime: Runtime, job_id: uuid.UUID) -> list[_Row]:
    with runtime.transaction() as session:
        segments = session.scalars(select(Segment).where(Segment.job_id == job_id).order_by(Segment.index)).all()
        rows = []
        for s in segments:
            if s.audio_key is None:
                raise PermanentJobError("a finished segment has no stored audio", code="missing_segment_audio")
            rows.append(
                _Row(
                    s.index,
                    s.chapter or 0,
                    s.text,
                    s.caption if s.caption is not None else s.text,
                    s.pause_after_s or 0.0,
                    s.audio_key,
                    s.content_key,
                    s.total_attempts == 0,
                )
            )
        return rows


def assemble_book(runtime: Runtime, work: lifecycle.AssemblyWork, loudness: Any) -> BookOutputs:
    book = work.book or {}
    rows = _rows(runtime, work.job_id)
    if not rows:
        raise PermanentJobError("the book has no segments", code="empty_text")
    titles: list[str] = list(book.get("chapters") or [])
    chapter_gap_s = float((book.get("pauses") or {}).get("chapter", 2.0))
    storage = runtime.storage

    parts = [Waveform.from_audio_bytes(storage.get(r.audio_key)) for r in rows]
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise PermanentJobError("segments have different sample rates", code="inconsistent_segments")
    ceiling = loudness.true_peak_db - LOSSY_HEADROOM_DB

    chapter_numbers = sorted({r.chapter for r in rows})
    chapter_audio: list[np.ndarray] = []
    # Per segment: (start, end) sample in its chapter.
    spans: dict[int, tuple[int, int]] = {}
    for number in chapter_numbers:
        members = [i for i, r in enumerate(rows) if r.chapter == number]
        levelled = normalize_chapter([parts[i].samples for i in members], rate, loudness, ceiling_db=ceiling)
        pieces: list[np.ndarray] = []
        cursor = 0
        for i, samples in zip(members, levelled.segments):
            samples = np.asarray(samples, np.float32)
            spans[i] = (cursor, cursor + len(samples))
            pause = np.zeros(round(rows[i].pause_after_s * rate), np.float32)
            pieces += [samples, pause]
            cursor += len(samples) + len(pause)
        chapter_audio.append(np.concatenate(pieces))

    gap = np.zeros(round(chapter_gap_s * rate), np.float32)
    book_pieces: list[np.ndarray] = []
    chapter_starts: list[int] = []
    cursor = 0
    for n, audio in enumerate(chapter_audio):
        if n:
            book_pieces.append(gap)
            cursor += len(gap)
        chapter_starts.append(cursor)
        book_pieces.append(audio)
        cursor += len(audio)
    whole = np.concatenate(book_pieces)

    def key(name: str) -> str:
        return job_object_key(work.tenant_id, work.job_id, name)

    job_format = get_format(FORMAT_NAMES[work.output_format])
    files: dict[str, str] = {}
    outputs: dict[str, tuple[str, bytes, str]] = {}  # kind → (key, data, mime)
    chapters_out: list[dict[str, Any]] = []
    marks: list[ChapterMark] = []
    for n, number in enumerate(chapter_numbers):
        title = titles[number] if number < len(titles) else f"Chapter {number + 1}"
        start = chapter_starts[n] / rate
        end = (chapter_starts[n] + len(chapter_audio[n])) / rate
        marks.append(ChapterMark(title, start, end))
        data = encode(chapter_audio[n], rate, job_format.name, work.sample_rate)
        kind = f"chapter-{n + 1:03d}"
        outputs[kind] = (key(f"chapters/{n + 1:03d}{job_format.extension}"), data, job_format.mime)
        chapters_out.append(
            {"index": n, "title": title, "start_s": round(start, 3), "end_s": round(end, 3), "file": outputs[kind][0]}
        )
    # The MP4/MP3 encoders take the book at a rate they carry; timings do not depend on it.
    for fmt in ("m4b", "mp3"):
        rates = BOOK_FORMATS[fmt][5]
        book_rate = work.sample_rate if work.sample_rate in rates else 44100
        data = encode_book(resample(whole, rate, book_rate), book_rate, fmt, marks, book.get("title"))
        outputs[fmt] = (key(f"book{BOOK_FORMATS[fmt][3]}"), data, BOOK_FORMATS[fmt][4])
    if work.output_format == "mp3":
        audio_entry = outputs["mp3"]
    else:
        audio_entry = (
            key(f"audio{job_format.extension}"),
            encode(whole, rate, job_format.name, work.sample_rate),
            job_format.mime,
        )

    segments_out: list[dict[str, Any]] = []
    cues: list[Cue] = []
    for i, r in enumerate(rows):
        n = chapter_numbers.index(r.chapter)
        start_in, end_in = spans[i]
        start = (chapter_starts[n] + start_in) / rate
        end = (chapter_starts[n] + end_in) / rate
        cues.append(Cue(start, end, r.caption))
        segments_out.append(
            {
                "index": r.index,
                "chapter": n,
                "text": r.caption,
                "spoken": r.text,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
                "chapter_start_s": round(start_in / rate, 3),
                "chapter_end_s": round(end_in / rate, 3),
                "pause_after_s": r.pause_after_s,
                "content_key": r.content_key,
                "reused": r.reused,
            }
        )
        chapters_out[n].setdefault("segments", []).append(r.index)
    outputs["srt"] = (key("subtitles.srt"), srt(cues).encode(), "application/x-subrip")
    outputs["vtt"] = (key("subtitles.vtt"), webvtt(cues).encode(), "text/vtt")
    files = {kind: entry[0] for kind, entry in outputs.items()}
    files["audio"] = audio_entry[0]
    manifest = {
        "version": 1,
        "job_id": str(work.job_id),
        "title": book.get("title"),
        "sample_rate": rate,
        "duration_s": round(len(whole) / rate, 3),
        "pauses": book.get("pauses"),
        "chapters": chapters_out,
        "segments": segments_out,
        "files": files,
    }
    outputs["manifest"] = (
        key("manifest.json"),
        json.dumps(manifest, ensure_ascii=False, indent=1).encode(),
        "application/json",
    )

    stored: dict[str, StoredObject] = {}
    for kind, (object_key, data, mime) in outputs.items():
        stored[kind] = storage.put(object_key, data, mime)
    audio = stored["mp3"] if work.output_format == "mp3" else storage.put(*audio_entry)
    return BookOutputs(audio, stored)
