"""Book fixtures and checks shared by the book tests: a 3-chapter Markdown book, an EPUB built
with ebooklib, the chapters ffprobe reads from a file, and subtitle cues checked against where
the decoded audio actually has sound."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from workers.post.subtitles import parse_timestamp

CHAPTER_TITLES = ["The Station", "The Crossing", "The Harbour"]

PARAGRAPHS = [
    [
        "The train was late again. Nobody on the platform seemed surprised.",
        "A porter pushed a cart of parcels past the benches. [pause 1.2s] Then the bell rang.",
    ],
    [
        "The ferry left at noon. Gulls followed it out past the breakwater.",
        "Halfway across, the wind turned cold and the passengers went below.",
        "Only the captain stayed on deck, watching the grey line of the coast.",
    ],
    [
        "The harbour lights came on one by one.",
        "She walked up the hill to the house and knocked twice.",
    ],
]


def markdown_book(paragraphs: list[list[str]] | None = None) -> str:
    chapters = paragraphs or PARAGRAPHS
    parts = []
    for title, paras in zip(CHAPTER_TITLES, chapters, strict=True):
        parts.append(f"# {title}\n\n" + "\n\n".join(paras) + "\n")
    return "\n".join(parts)


def epub_book(title: str = "A Small Book") -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("voxmill-test-book")
    book.set_title(title)
    book.set_language("en")
    chapters = []
    for n, (name, paras) in enumerate(zip(CHAPTER_TITLES, PARAGRAPHS, strict=True), start=1):
        item = epub.EpubHtml(title=name, file_name=f"chapter{n}.xhtml", lang="en")
        body = "".join(f"<p>{p}</p>" for p in paras)
        item.content = f"<html><body><h1>{name}</h1>{body}</body></html>"
        book.add_item(item)
        chapters.append(item)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.epub"
        epub.write_epub(str(path), book)
        return path.read_bytes()


def ffprobe_chapters(path: Path) -> list[tuple[float, float, str]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_chapters", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [
        (float(c["start_time"]), float(c["end_time"]), c.get("tags", {}).get("title", ""))
        for c in json.loads(out)["chapters"]
    ]


def parse_cues(text: str) -> list[tuple[float, float, str]]:
    """Cues of an SRT or WebVTT file: (start, end, text)."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.strip().split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue
        start, end = (part.strip() for part in lines[timing].split("-->"))
        cues.append((parse_timestamp(start), parse_timestamp(end), " ".join(lines[timing + 1 :])))
    return cues


def sound_spans(samples: np.ndarray, rate: int, threshold_db: float = -45.0, bridge_s: float = 0.1) -> list[tuple[float, float]]:
    """Where the audio has sound: 2 ms frames over the threshold, gaps shorter than ``bridge_s``
    bridged (the test engine's tokens touch zero between them for a sample or two)."""
    x = np.asarray(samples, np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    hop = max(1, rate // 500)
    frames = len(x) // hop
    rms = np.sqrt(np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-20)
    active = 20 * np.log10(rms) > threshold_db
    spans: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(active):
        if on and start is None:
            start = i
        if not on and start is not None:
            spans.append((start * hop / rate, i * hop / rate))
            start = None
    if start is not None:
        spans.append((start * hop / rate, frames * hop / rate))
    merged: list[tuple[float, float]] = []
    for span in spans:
        if merged and span[0] - merged[-1][1] < bridge_s:
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return merged


def assert_cues_match_audio(
    cues: list[tuple[float, float, str]], samples: np.ndarray, rate: int, tolerance_s: float = 0.05
) -> None:
    spans = sound_spans(samples, rate)
    assert len(spans) == len(cues), (len(spans), len(cues), spans[:5], cues[:5])
    for (start, end, text), (heard_start, heard_end) in zip(cues, spans, strict=True):
        assert abs(start - heard_start) <= tolerance_s, (text, start, heard_start)
        assert abs(end - heard_end) <= tolerance_s, (text, end, heard_end)
