"""Subtitles from segment timings: SubRip (SRT) and WebVTT, one cue per segment. A cue's text
is the segment's caption (an exact slice of the source) on one line: only whitespace changes,
and WebVTT's three reserved characters are written as the character references its parsers
turn back into them."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _one_line(text: str) -> str:
    # A blank line ends a cue in both formats.
    return " ".join(text.split())


def _vtt_text(text: str) -> str:
    # "<" opens a tag and "&" a reference in WebVTT cue text, and "-->" would read as a timing
    # line; &lt; &amp; &gt; are decoded back to the written characters by every parser.
    return html.escape(_one_line(text), quote=False)


def srt(cues: list[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{_one_line(c.text)}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def webvtt(cues: list[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{_vtt_text(c.text)}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def parse_timestamp(value: str) -> float:
    """``HH:MM:SS,mmm`` or ``HH:MM:SS.mmm`` → seconds (for readers and tests)."""
    hms, millis = value.replace(",", ".").rsplit(".", 1)
    hours, minutes, secs = (int(p) for p in hms.split(":"))
    return hours * 3600 + minutes * 60 + secs + int(millis) / 1000
