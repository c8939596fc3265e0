"""Planning a job: its text → segments with content keys. ``sentences`` (the default) cuts at
sentence ends and packs sentences up to the length cap — the unit an audiobook is re-rendered
in; the official split methods (``workers.gpt.text.SplitMethod``) are there for users who know
them. Every segment respects the cap, whatever the method."""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Any

from jobs.keys import content_key
from jobs.lifecycle import PlannedSegment
from workers.gpt.text import SplitMethod, split_text

SENTENCES = "sentences"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;…])\s*")
_SOFT_BREAK = re.compile(r"[,，、;；:：—]\s*|\s+")


def _cap(piece: str, max_chars: int) -> list[str]:
    """Cut a piece longer than the cap at its last soft break (comma, space) before the cap."""
    out: list[str] = []
    while len(piece) > max_chars:
        breaks = [m.end() for m in _SOFT_BREAK.finditer(piece, 0, max_chars) if m.end() > max_chars // 2]
        cut = breaks[-1] if breaks else max_chars
        out.append(piece[:cut].strip())
        piece = piece[cut:].strip()
    if piece:
        out.append(piece)
    return out


def split_segments(text: str, method: str, language: str, max_chars: int) -> list[str]:
    if method == SENTENCES:
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
        segments: list[str] = []
        for piece in (p for s in sentences for p in _cap(s, max_chars)):
            joiner = "" if _is_cjk(piece[:1]) else " "
            if segments and len(segments[-1]) + len(joiner) + len(piece) <= max_chars:
                segments[-1] = f"{segments[-1]}{joiner}{piece}"
            else:
                segments.append(piece)
        return segments
    pieces = split_text(text, SplitMethod.parse(method), "en" if language == "en" else "zh")
    return [p for piece in pieces for p in _cap(piece, max_chars)]


def _is_cjk(char: str) -> bool:
    return bool(char) and unicodedata.east_asian_width(char) in ("W", "F")


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
        PlannedSegment(text=piece, content_key=content_key(normalise_for_key(piece), voice_id, model_version, params))
        for piece in split_segments(text, method, language, max_chars)
    ]
