"""Whole-book files with chapter markers: an M4B (AAC in MP4, QuickTime chapter track, what
audiobook players read) and an MP3 (ID3v2 CHAP/CTOC frames), written by ffmpeg from raw samples
and an ffmetadata file. Same bit-exact flags as ``codecs``: the same samples give the same bytes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.post.audio.codecs import AAC_OPTIONS, AAC_RATES, ENCODES, MP3_RATES, EncoderError, _ffmpeg
from workers.post.audio.meter import as_frames

BOOK_FORMATS = {
    # name: (codec, muxer, default bitrate, extension, mime, rates)
    "m4b": ("aac", "ipod", "64k", ".m4b", "audio/mp4", AAC_RATES),
    "mp3": ("libmp3lame", "mp3", "64k", ".mp3", "audio/mpeg", MP3_RATES),
}


@dataclass(frozen=True)
class ChapterMark:
    title: str
    start_s: float
    end_s: float


def _escape(value: str) -> str:
    """ffmetadata escapes ``= ; # \\`` and newlines with a backslash."""
    out = value.replace("\\", "\\\\")
    for ch in "=;#":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def ffmetadata(chapters: list[ChapterMark], title: str | None = None) -> str:
    lines = [";FFMETADATA1"]
    if title:
        lines.append(f"title={_escape(title)}")
    for mark in chapters:
        lines += [
            "",
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={round(mark.start_s * 1000)}",
            f"END={round(mark.end_s * 1000)}",
            f"title={_escape(mark.title)}",
        ]
    return "\n".join(lines) + "\n"


def encode_book(
    samples: np.ndarray,
    sample_rate: int,
    fmt: str,
    chapters: list[ChapterMark],
    title: str | None = None,
    bitrate: str | None = None,
) -> bytes:
    """Encode ``[n]`` float audio as an M4B or MP3 carrying ``chapters``."""
    if fmt not in BOOK_FORMATS:
        raise EncoderError(f"book format must be one of {sorted(BOOK_FORMATS)}, not {fmt!r}")
    codec, muxer, default_bitrate, extension, _, rates = BOOK_FORMATS[fmt]
    if sample_rate not in rates:
        raise EncoderError(f"{fmt} cannot carry {sample_rate} Hz")
    x = as_frames(samples).astype(np.float32)
    ENCODES[fmt] += 1
    with tempfile.TemporaryDirectory(prefix="voxmill-book-") as tmp:
        meta = Path(tmp) / "chapters.txt"
        meta.write_text(ffmetadata(chapters, title), encoding="utf-8")
        out = Path(tmp) / f"book{extension}"
        args = [
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(x.shape[1]), "-i", "pipe:0",
            "-i", str(meta), "-map", "0:a", "-map_metadata", "1", "-map_chapters", "1",
            "-c:a", codec, "-b:a", bitrate or default_bitrate, "-ar", str(sample_rate),
            "-fflags", "+bitexact", "-flags:a", "+bitexact",
        ]
        args += [*AAC_OPTIONS, "-movflags", "+faststart"] if muxer == "ipod" else ["-id3v2_version", "3"]
        _ffmpeg([*args, "-f", muxer, str(out)], stdin=x.tobytes())
        return out.read_bytes()
