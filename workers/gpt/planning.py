"""Planning a job: its text → segments with content keys. Every segment is an exact slice of
the text (its caption, what subtitles show); what is synthesised and keyed is the slice's spoken
form, from readings found on the whole text (``workers.gpt.text.reading``). ``sentences`` (the
default) cuts at sentence ends and packs sentences up to the length cap — the unit an audiobook
is re-rendered in; the official split methods (``workers.gpt.text.SplitMethod``) are there for
users who know them. Every segment respects the cap, whatever the method."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobs.keys import content_key
from jobs.lifecycle import PlannedSegment
from workers.gpt.text.reading import Replacement, overlay, readings, spoken
from workers.gpt.text.segment import SplitMethod, Span, segment_spans

SENTENCES = SplitMethod.SENTENCES.value
_RE_SPEAKABLE = re.compile(r"\w")


@dataclass(frozen=True)
class Piece:
    """One planned segment: ``text[span]`` as written, and as it is spoken."""

    span: Span
    written: str
    spoken: str


def plan_pieces(
    text: str, method: str, language: str, max_chars: int, lexicon: Sequence[Replacement] = ()
) -> list[Piece]:
    """Segments of ``text`` with their spoken forms; ``lexicon`` replacements win over the
    reading rules. A text with nothing to pronounce has no segments."""
    if not _RE_SPEAKABLE.search(text):
        return []
    replacements = overlay(lexicon, readings(text, language))
    spans = segment_spans(text, SplitMethod.parse(method), language, max_chars, keep=[r.span for r in replacements])
    return [Piece(s, s.text(text), spoken(text, s, replacements)) for s in spans]


def normalise_for_key(text: str) -> str:
    """NFKC and collapsed whitespace: edits that cannot change the audio keep the key."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def plan_segments(
    text: str,
    method: str,
    language: str,
    voice_id: uuid.UUID,
    model_version: str,
    params: dict[str, Any],
    max_chars: int,
) -> list[PlannedSegment]:
    return [
        PlannedSegment(
            text=piece.spoken,
            content_key=content_key(normalise_for_key(piece.spoken), voice_id, model_version, params),
            caption=piece.written,
        )
        for piece in plan_pieces(text, method, language, max_chars)
    ]
