"""Assembling a book on the post queue: each chapter from its finished segments (levelled as one
programme, the planned silence after each segment), one file per chapter in the job's format,
the whole book as an M4B and an MP3 with chapter markers and in the job's format, a manifest
with every segment's timing, and SRT/WebVTT subtitles from those timings.

Every audio file goes through the delivery loop of ``audio.pipeline``: encoded, decoded, measured
against the job's loudness target and true-peak ceiling, corrected and encoded again until it
meets them; a file that cannot is a ``loudness_unmet`` failure, never a delivered miss.

Chapter and whole-book files are stored under content keys (``jobs.keys.output_object_key``) of
what feeds them: the bytes of each segment and the pause after it, the loudness target, the
format, rate and bitrate, the chapter layout (gaps, titles). A file whose key already exists was
delivered and verified before, so it is reused as is: an unchanged rerun encodes nothing, and an
edited segment rebuilds its own chapter file and the whole-book files only. ``DELIVERY_VERSION``
is part of every key; bump it when levelling or the delivery loop would produce different bytes.

Timings are counted in samples of the assembled audio, so they are exact in the lossless files;
the M4B and MP3 carry the encoder's delay in their headers (MP4 edit list, LAME tag), which
decoders honour, so they line up there too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from db.models import Segment
from jobs import lifecycle
from jobs.engine import Waveform
from jobs.errors import PermanentJobError
from jobs.keys import job_object_key, output_object_key
from jobs.runtime import Runtime
from jobs.storage import StoredObject, Storage
from workers.post.audio import LoudnessTarget, get_format, normalize_chapter
from workers.post.audio.chapters import BOOK_FORMATS, ChapterMark
from workers.post.audio.pipeline import book_rate, deliver_book, deliver_format
from workers.post.subtitles import Cue, srt, webvtt
from workers.post.tasks import FORMAT_NAMES

log = logging.getLogger("voxmill.post")

DELIVERY_VERSION = 1


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


def _content_key(material: dict[str, Any]) -> str:
    text = json.dumps({"v": DELIVERY_VERSION, **material}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class _Outputs:
    """Content-keyed outputs of one assembly: reused when stored, else made and stored."""

    def __init__(self, storage: Storage, tenant_id: uuid.UUID) -> None:
        self.storage = storage
        self.tenant_id = tenant_id
        self.reused: list[str] = []
        self.made: list[str] = []

    def get(self, material: dict[str, Any], name: str, mime: str, make: Callable[[], bytes]) -> StoredObject:
        key = output_object_key(self.tenant_id, _content_key(material), name)
        if self.storage.exists(key):
            data = self.storage.get(key)
            self.reused.append(key)
            return StoredObject(key, len(data), hashlib.sha256(data).hexdigest(), mime)
        stored = self.storage.put(key, make(), mime)
        self.made.append(key)
        return stored


def assemble_book(runtime: Runtime, work: lifecycle.AssemblyWork, loudness: LoudnessTarget) -> BookOutputs:
    book = work.book or {}
    rows = _rows(runtime, work.job_id)
    if not rows:
        raise PermanentJobError("the book has no segments", code="empty_text")
    titles: list[str] = list(book.get("chapters") or [])
    chapter_gap_s = float((book.get("pauses") or {}).get("chapter", 2.0))
    storage = runtime.storage

    blobs = [storage.get(r.audio_key) for r in rows]
    digests = [hashlib.sha256(b).hexdigest() for b in blobs]
    parts = [Waveform.from_audio_bytes(b) for b in blobs]
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise PermanentJobError("segments have different sample rates", code="inconsistent_segments")
    target = asdict(loudness)

    # The layout first (levelling keeps every length): per segment its (start, end) sample in
    # its chapter, per chapter its length and where it starts in the book.
    chapter_numbers = sorted({r.chapter for r in rows})
    members = {number: [i for i, r in enumerate(rows) if r.chapter == number] for number in chapter_numbers}
    pauses = [round(r.pause_after_s * rate) for r in rows]
    spans: dict[int, tuple[int, int]] = {}
    chapter_lengths: list[int] = []
    chapter_ids: list[str] = []
    for number in chapter_numbers:
        cursor = 0
        for i in members[number]:
            spans[i] = (cursor, cursor + len(parts[i].samples))
            cursor += len(parts[i].samples) + pauses[i]
        chapter_lengths.append(cursor)
        chapter_ids.append(
            _content_key(
                {"segments": [[digests[i], pauses[i]] for i in members[number]], "rate": rate, "target": target}
            )
        )
    gap = round(chapter_gap_s * rate)
    chapter_starts: list[int] = []
    cursor = 0
    for n, length in enumerate(chapter_lengths):
        cursor += gap if n else 0
        chapter_starts.append(cursor)
        cursor += length
    total = cursor

    levelled: dict[int, np.ndarray] = {}

    def chapter_audio(n: int) -> np.ndarray:
        """The chapter levelled as one programme, its pauses in place (made when first needed)."""
        if n not in levelled:
            indices = members[chapter_numbers[n]]
            result = normalize_chapter([parts[i].samples for i in indices], rate, loudness)
            pieces: list[np.ndarray] = []
            for i, samples in zip(indices, result.segments, strict=True):
                pieces += [np.asarray(samples, np.float32), np.zeros(pauses[i], np.float32)]
            levelled[n] = np.concatenate(pieces)
        return levelled[n]

    assembled: list[np.ndarray] = []

    def whole() -> np.ndarray:
        """The book: levelled chapters with the chapter gaps (made once, when first needed)."""
        if not assembled:
            out = np.zeros(total, np.float32)
            for n, start in enumerate(chapter_starts):
                out[start : start + chapter_lengths[n]] = chapter_audio(n)
            assembled.append(out)
        return assembled[0]

    def key(name: str) -> str:
        return job_object_key(work.tenant_id, work.job_id, name)

    outputs = _Outputs(storage, work.tenant_id)
    job_format = get_format(FORMAT_NAMES[work.output_format])
    stored: dict[str, StoredObject] = {}
    chapters_out: list[dict[str, Any]] = []
    marks: list[ChapterMark] = []
    for n, number in enumerate(chapter_numbers):
        title = titles[number] if number < len(titles) else f"Chapter {number + 1}"
        start = chapter_starts[n] / rate
        end = (chapter_starts[n] + chapter_lengths[n]) / rate
        marks.append(ChapterMark(title, start, end))
        name = f"{n + 1:03d}{job_format.extension}"

        def make_chapter(n: int = n, name: str = name) -> bytes:
            _, done = deliver_format(
                chapter_audio(n), rate, job_format.name, loudness, target_rate=work.sample_rate, name=f"chapter {name}"
            )
            return done.data

        material = {"chapter": chapter_ids[n], "format": job_format.name, "rate": work.sample_rate}
        kind = f"chapter-{n + 1:03d}"
        stored[kind] = outputs.get(material, name, job_format.mime, make_chapter)
        chapters_out.append(
            {"index": n, "title": title, "start_s": round(start, 3), "end_s": round(end, 3), "file": stored[kind].key}
        )
    layout = {"chapters": chapter_ids, "gap": gap, "rate": rate, "target": target}
    # The MP4/MP3 encoders take the book at a rate they carry; timings do not depend on it.
    for fmt in ("m4b", "mp3"):
        codec, _, bitrate, extension, mime, _ = BOOK_FORMATS[fmt]

        def make_book(fmt: str = fmt) -> bytes:
            title = book.get("title")
            return deliver_book(whole(), rate, fmt, loudness, marks, title, target_rate=work.sample_rate).data

        material = {
            **layout,
            "format": fmt,
            "codec": [codec, bitrate, book_rate(fmt, work.sample_rate)],
            "marks": [asdict(m) for m in marks],
            "title": book.get("title"),
        }
        stored[fmt] = outputs.get(material, f"book{extension}", mime, make_book)
    if work.output_format == "mp3":
        audio = stored["mp3"]
    else:

        def make_audio() -> bytes:
            _, done = deliver_format(
                whole(), rate, job_format.name, loudness, target_rate=work.sample_rate, name="book audio"
            )
            return done.data

        material = {**layout, "format": job_format.name, "sample_rate": work.sample_rate}
        audio = outputs.get(material, f"audio{job_format.extension}", job_format.mime, make_audio)

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
    texts: dict[str, tuple[str, bytes, str]] = {
        "srt": (key("subtitles.srt"), srt(cues).encode(), "application/x-subrip"),
        "vtt": (key("subtitles.vtt"), webvtt(cues).encode(), "text/vtt"),
    }
    files = {kind: obj.key for kind, obj in stored.items()}
    files.update({kind: entry[0] for kind, entry in texts.items()})
    files["audio"] = audio.key
    manifest = {
        "version": 1,
        "job_id": str(work.job_id),
        "title": book.get("title"),
        "sample_rate": rate,
        "duration_s": round(total / rate, 3),
        "pauses": book.get("pauses"),
        "chapters": chapters_out,
        "segments": segments_out,
        "files": files,
    }
    texts["manifest"] = (
        key("manifest.json"),
        json.dumps(manifest, ensure_ascii=False, indent=1).encode(),
        "application/json",
    )
    for kind, (object_key, data, mime) in texts.items():
        stored[kind] = storage.put(object_key, data, mime)
    log.info(
        "book assembled",
        extra={"fields": {"outputs_reused": len(outputs.reused), "outputs_made": len(outputs.made)}},
    )
    return BookOutputs(audio, stored)
