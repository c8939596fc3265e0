"""Planning a book: chapters of paragraphs → segments, each cut at sentence boundaries under the
length cap (``workers.gpt.planning``), with the silence that follows it, the text as written
(subtitles) and the text as spoken (after the pronunciation lexicon), whose content key names the
render. Pause markers (``[pause 1.5s]``, see ``jobs.books``) cut the text and set the silence.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from jobs.books import MAX_PAUSE_S, BookOptions
from jobs.keys import content_key
from jobs.lifecycle import PlannedSegment
from workers.gpt.planning import normalise_for_key, plan_pieces
from workers.gpt.text.reading import Replacement
from workers.gpt.sources import Book

PAUSE_MARKER = re.compile(r"\[\s*pause(?:\s+(\d+(?:\.\d+)?)\s*(ms|s)?)?\s*\]", re.IGNORECASE)


def split_pauses(text: str, default_s: float) -> list[tuple[str, float | None]]:
    """``text`` cut at its pause markers: (piece, pause after it or None). A marker with no
    length is ``default_s``; consecutive markers add up."""
    out: list[tuple[str, float | None]] = []
    last = 0
    for match in PAUSE_MARKER.finditer(text):
        number, unit = match.group(1), (match.group(2) or "s").lower()
        pause = default_s if number is None else float(number) / (1000.0 if unit == "ms" else 1.0)
        piece = text[last : match.start()].strip()
        if piece or not out:
            out.append((piece, min(pause, MAX_PAUSE_S)))
        else:
            previous, before = out[-1]
            out[-1] = (previous, min((before or 0.0) + pause, MAX_PAUSE_S))
        last = match.end()
    tail = text[last:].strip()
    if tail or not out:
        out.append((tail, None))
    return out


class Lexicon:
    """Whole-word, case-sensitive replacements; longer entries win over their prefixes."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = {k.strip(): v for k, v in entries.items() if k.strip()}
        words = sorted(self.entries, key=len, reverse=True)
        self.pattern = (
            re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words)) if words else None
        )

    def apply(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: self.entries[m.group(0)], text)

    def replacements(self, text: str) -> list[Replacement]:
        """Where ``text`` holds an entry, as replacements for the planner."""
        if self.pattern is None:
            return []
        return [Replacement(m.start(), m.end(), self.entries[m.group(0)]) for m in self.pattern.finditer(text)]


@dataclass(frozen=True)
class BookPlan:
    segments: list[PlannedSegment]
    chapter_titles: list[str]


def plan_book(
    book: Book,
    options: BookOptions,
    method: str,
    language: str,
    voice_id: uuid.UUID,
    model_version: str,
    params: dict[str, Any],
    max_chars: int,
) -> BookPlan:
    lexicon = Lexicon(options.lexicon)
    planned: list[PlannedSegment] = []
    titles: list[str] = []
    for number, chapter in enumerate(book.chapters):
        title = chapter.title or (book.title if number == 0 and book.title else f"Chapter {number + 1}")
        titles.append(title)
        # (written text, spoken text, pause after) for each unit of the chapter, in reading order.
        units: list[tuple[str, str, float]] = []
        blocks = ([chapter.title] if chapter.title and options.speak_titles else []) + chapter.paragraphs
        for block in blocks:
            for piece, marker in split_pauses(block, options.paragraph_pause_s):
                if not piece:
                    if units and marker is not None:
                        units[-1] = (*units[-1][:2], units[-1][2] + marker)
                    continue
                parts = plan_pieces(piece, method, language, max_chars, lexicon.replacements(piece))
                for i, part in enumerate(parts):
                    last = i == len(parts) - 1
                    units.append((part.written, part.spoken, options.sentence_pause_s if not last else -1.0))
                if marker is not None and units:
                    units[-1] = (*units[-1][:2], marker)
            if units and units[-1][2] < 0:
                units[-1] = (*units[-1][:2], options.paragraph_pause_s)
        units = [(w, s, options.sentence_pause_s if pause < 0 else pause) for w, s, pause in units]
        if units:
            # The gap between chapters is the assembly's (options.chapter_pause_s).
            units[-1] = (*units[-1][:2], 0.0)
        for written, spoken, pause in units:
            key = content_key(normalise_for_key(spoken), voice_id, model_version, params)
            planned.append(
                PlannedSegment(
                    text=spoken, content_key=key, chapter=number, pause_after_s=pause, caption=written
                )
            )
    return BookPlan(planned, titles)
