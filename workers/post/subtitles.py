"""Subtitles from segment timings: SubRip (SRT) and WebVTT, one cue per segment."""

from __future__ import annotations

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
    # A blank line ends a cue in both formats; "-->" would read as a timing line in WebVTT.
    return " ".join(text.split()).replace("-->", "→")


def srt(cues: list[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start_s, ',')} --> {_timestamp(c.end_s, ',')}\n{_one_line(c.text)}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def webvtt(cues: list[Cue]) -> str:
    blocks = [
        f"{n}\n{_timestamp(c.start_s, '.')} --> {_timestamp(c.end_s, '.')}\n{_one_line(c.text)}\n"
        for n, c in enumerate(cues, start=1)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def parse_timestamp(value: str) -> float:
    """``HH:MM:SS,mmm`` or ``HH:MM:SS.mmm`` → seconds (for readers and tests)."""
    hms, millis = value.replace(",", ".").rsplit(".", 1)
    hours, minutes, secs = (int(p) for p in hms.split(":"))
    return hours * 3600 + minutes * 60 + secs + int(millis) / 1000
