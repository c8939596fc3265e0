"""The delivery loop every delivered file goes through (a plain job's file, a book's chapter files,
its M4B, its MP3): level → encode → decode what was encoded → measure → correct → re-check.

Levelling (``loudness``) brings the programme to the target with its true peak under the ceiling,
but encoders move both: MP3, AAC and Opus decoders overshoot the input's true peak (a few tenths
of a dB on speech, several dB on dense or click-laden material), and low-pass filters take
loudness away (MP3 at 32 kHz cuts the sibilants that K-weighting counts). So ``deliver`` judges
the *decoded* file: integrated loudness (or ACX's RMS) within ``target.tolerance`` of the target
and true peak (oversampled, ``meter.true_peak_db``) at or under the ceiling. When the decoded file misses by
more than ``LEVEL_AIM`` or overshoots, it is corrected and encoded again:

- an overshoot lowers the limiter ceiling by the excess plus a margin (overshoot is not linear
  in the ceiling);
- a level short of the target with peak room the codec left unused raises the limiter ceiling
  into that room (a limiter in full work turns more gain into no more loudness);
- a level drift moves the aimed level by the drift; the gain is re-fitted through the limiter
  (``loudness.normalize``).

After ``MAX_ENCODES`` tries the closest passing attempt is delivered; if none passes,
``LoudnessUnmet`` is raised and the job fails with ``loudness_unmet`` rather than ship a miss.

Lossless formats go through the same loop (their decode is exact, so one encode suffices).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from workers.post.audio.chapters import BOOK_FORMATS, ChapterMark, encode_book
from workers.post.audio.codecs import AudioFormat, decode, encode, get_format
from workers.post.audio.loudness import (
    VOICE_OVER,
    LevelReport,
    LoudnessTarget,
    level_report,
    normalize,
    normalize_chapter,
)
from workers.post.audio.meter import as_frames
from workers.post.audio.resample import resample

# The pause between consecutive segments wherever they are joined (a job's file, a stream).
SEGMENT_GAP_S = 0.3
# Starting headroom under the ceiling per lossy format (book formats included); Opus at speech
# bitrates overshoots most. The loop adds to it when a decoded file still overshoots.
LOSSY_HEADROOM_DB = {"mp3": 0.5, "m4a": 0.5, "m4b": 0.5, "opus": 1.0}
MAX_ENCODES = 4
# Re-aim when the decoded level is further than this from the target (well inside the ±0.5
# the target allows, so a file that passed stays passed after rounding in the next decoder).
LEVEL_AIM = 0.1
# Added to a measured overshoot when lowering the limiter ceiling for the next encode.
OVERSHOOT_MARGIN_DB = 0.25
# A decoded file this far under its aim lost level in the codec itself (a low-pass removed the
# signal's top octave): from then on the loop levels the decoded file (see ``deliver``).
CODEC_LOSS_DB = 1.5


class LoudnessUnmet(Exception):
    """A delivered file missed its target after decoding, whatever the loop corrected."""

    def __init__(self, name: str, target: LoudnessTarget, report: LevelReport, encodes: int) -> None:
        unit = "LUFS" if target.measure == "lufs" else "dBFS RMS"
        super().__init__(
            f"{name}: after {encodes} encodes the decoded file measures {report.level:.2f} {unit} "
            f"(target {target.level:g} ±{target.tolerance:g}) and {report.true_peak_db:.2f} dBTP "
            f"(ceiling {target.true_peak_db:g})"
        )
        self.report = report


@dataclass(frozen=True)
class Delivered:
    """Encoded bytes and what decoding them measures."""

    data: bytes
    report: LevelReport  # of the decoded file
    sample_rate: int  # of the decoded file
    encodes: int


@dataclass(frozen=True)
class Finished:
    data: bytes
    format: AudioFormat
    sample_rate: int  # of the encoded stream
    report: LevelReport  # of the decoded file
    segment_levels: list[float] | None  # chapter mode: per-segment level before encoding
    encodes: int  # encode passes the decoded checks needed

    @property
    def mime(self) -> str:
        return self.format.mime

    @property
    def extension(self) -> str:
        return self.format.extension


def meets(report: LevelReport, target: LoudnessTarget) -> bool:
    """The delivery verdict: level within the tolerance, true peak under the ceiling.

    ACX's noise floor is reported, not enforced: no gain or limiter can lower it.
    """
    return (
        math.isfinite(report.level)
        and abs(report.level - target.level) <= target.tolerance
        and report.true_peak_db <= target.true_peak_db + 1e-6
    )


def deliver(
    samples: np.ndarray,
    sample_rate: int,
    target: LoudnessTarget,
    encoder: Callable[[np.ndarray], bytes],
    decode_format: str,
    *,
    headroom_db: float = 0.0,
    name: str = "audio",
) -> Delivered:
    """Encode ``samples`` (a levelled programme at ``sample_rate``, the rate ``encoder`` takes)
    until the decoded file meets ``target``; see the module docstring. Raises ``LoudnessUnmet``.

    Silent input is encoded once and returned with its (failing) report: there is nothing to
    level, and the caller decides whether silence is an error.
    """
    x = as_frames(samples)
    mono = np.ndim(samples) == 1
    headroom = headroom_db
    aim = target
    best: tuple[float, Delivered] | None = None
    report: LevelReport | None = None
    codec_view = False
    for attempt in range(1, MAX_ENCODES + 1):
        # The limiter's ceiling may sit over the target's when the codec keeps taking peaks away.
        ceiling = min(0.0, target.true_peak_db - headroom)
        levelled = normalize(x, sample_rate, replace(aim, true_peak_db=ceiling)).samples
        data = encoder(levelled[:, 0] if mono else levelled)
        decoded, decoded_rate = decode(data, decode_format)
        report = level_report(decoded, decoded_rate, target)
        done = Delivered(data, report, decoded_rate, attempt)
        if not math.isfinite(report.level):
            return replace(done, report=_noted(report, "silent: nothing to level"))
        over = report.true_peak_db - target.true_peak_db
        drift = report.level - target.level
        if meets(report, target) and (best is None or abs(drift) < best[0]):
            best = (abs(drift), done)
        if over <= 0 and abs(drift) <= LEVEL_AIM:
            return done
        if not codec_view and drift < -CODEC_LOSS_DB:
            # The codec took level the limiter cannot give back (its low-pass on a bright signal:
            # more gain only drives the limiter harder). Level what the codec keeps, the decoded
            # file, and encode that: a second pass through the codec takes little more.
            x = _codec_view(decoded, decoded_rate, sample_rate, len(x))
            codec_view, headroom, aim = True, headroom_db, target
            continue
        if over > 0:
            headroom += over + OVERSHOOT_MARGIN_DB
        elif drift < -LEVEL_AIM and over < -OVERSHOOT_MARGIN_DB:
            # Too quiet with peak room to spare (the codec's low-pass took both): raise the limiter
            # ceiling into that room. A limiter in full work gives no more level for more gain.
            headroom += over + OVERSHOOT_MARGIN_DB
        if abs(drift) > LEVEL_AIM:
            aim = replace(aim, level=aim.level - drift)
    if best is not None:
        chosen = best[1]
        note = f"level {chosen.report.level - target.level:+.2f} off target after {MAX_ENCODES} encodes"
        return replace(chosen, report=_noted(chosen.report, note))
    assert report is not None
    raise LoudnessUnmet(name, target, report, MAX_ENCODES)


def _codec_view(decoded: np.ndarray, decoded_rate: int, sample_rate: int, frames: int) -> np.ndarray:
    """The decoded file as the loop's input: at the encoder's rate, as long as the original."""
    view = as_frames(resample(decoded, decoded_rate, sample_rate) if decoded_rate != sample_rate else decoded)
    if len(view) >= frames:
        return view[:frames]
    return np.concatenate([view, np.zeros((frames - len(view), view.shape[1]), view.dtype)])


def _noted(report: LevelReport, note: str) -> LevelReport:
    return replace(report, notes=(*report.notes, note))


def deliver_format(
    samples: np.ndarray,
    sample_rate: int,
    fmt: str,
    target: LoudnessTarget = VOICE_OVER,
    *,
    target_rate: int | None = None,
    bitrate: str | None = None,
    name: str = "audio",
) -> tuple[AudioFormat, Delivered]:
    """``deliver`` in one of ``codecs.FORMATS``: resampled first to the rate the format carries,
    so the limiter works on the samples the encoder gets."""
    spec = get_format(fmt)
    rate = spec.pick_rate(sample_rate, target_rate)
    x = resample(samples, sample_rate, rate)
    done = deliver(
        x,
        rate,
        target,
        lambda y: encode(y, rate, spec.name, rate, bitrate=bitrate),
        spec.name,
        headroom_db=LOSSY_HEADROOM_DB.get(spec.name, 0.0),
        name=name,
    )
    return spec, done


def book_rate(fmt: str, wanted: int | None) -> int:
    """The rate a whole-book file is encoded at: the job's when the codec carries it, else 44.1 kHz."""
    rates = BOOK_FORMATS[fmt][5]
    return wanted if wanted in rates else 44100


def deliver_book(
    samples: np.ndarray,
    sample_rate: int,
    fmt: str,
    target: LoudnessTarget,
    chapters: list[ChapterMark],
    title: str | None = None,
    *,
    target_rate: int | None = None,
) -> Delivered:
    """``deliver`` as a whole-book M4B or MP3 with chapter markers (``chapters.encode_book``)."""
    rate = book_rate(fmt, target_rate)
    return deliver(
        resample(samples, sample_rate, rate),
        rate,
        target,
        lambda y: encode_book(y, rate, fmt, chapters, title),
        "m4a" if fmt == "m4b" else "mp3",
        headroom_db=LOSSY_HEADROOM_DB[fmt],
        name=f"book{BOOK_FORMATS[fmt][3]}",
    )


def finish(
    audio: np.ndarray | Sequence[np.ndarray],
    sample_rate: int,
    fmt: str,
    target: LoudnessTarget = VOICE_OVER,
    *,
    target_rate: int | None = None,
    bitrate: str | None = None,
    level_segments: bool = True,
    gap_s: float = 0.0,
) -> Finished:
    """Finish one clip (an array) or one chapter (a sequence of segment arrays, joined with
    ``gap_s`` of silence after each but the last) into encoded bytes that meet ``target`` after
    decoding. Raises ``LoudnessUnmet``."""
    spec = get_format(fmt)
    rate = spec.pick_rate(sample_rate, target_rate)
    segment_levels: list[float] | None = None
    if isinstance(audio, np.ndarray):
        single = normalize(resample(audio, sample_rate, rate), rate, target)
        programme, before = single.samples, single.report
    else:
        segments = [resample(s, sample_rate, rate) for s in audio]
        if gap_s > 0:
            for i in range(len(segments) - 1):
                x = as_frames(segments[i])
                pad = np.zeros((round(gap_s * rate), x.shape[1]), np.float32)
                joined = np.concatenate([x, pad], axis=0)
                segments[i] = joined[:, 0] if np.ndim(segments[i]) == 1 else joined
        chapter = normalize_chapter(segments, rate, target, level_segments=level_segments)
        programme, before, segment_levels = chapter.joined(), chapter.report, chapter.segment_levels
    _, done = deliver_format(programme, rate, spec.name, target, target_rate=rate, bitrate=bitrate)
    report = replace(
        done.report,
        input_level=before.input_level,
        gain_db=before.gain_db,
        limited_db=before.limited_db,
        notes=(*before.notes, *done.report.notes),
    )
    return Finished(done.data, spec, done.sample_rate, report, segment_levels, done.encodes)
