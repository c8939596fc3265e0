"""The finishing pipeline one post task calls: resample → level (clip or chapter) → encode →
decode and verify.

Lossy codecs move peaks: MP3, AAC and Opus decoders commonly overshoot the input's true peak by a
few tenths of a dB, more on dense material. So for lossy formats the limiter first aims
``LOSSY_HEADROOM_DB`` under the ceiling, the encoded bytes are decoded and measured, and if the
decoded true peak is still over, the audio is re-levelled with that much more headroom and
encoded again; a loudness drift from the codec is corrected the same way. If the peak is still
over after ``MAX_ENCODES`` tries, a static trim by the excess is applied and noted (the ceiling
is a hard limit, the loudness target is not). EBU R128 s1 recommends
-1 dBTP for lossy delivery for the same reason. For lossy formats the report describes what a
listener decodes, not the samples before the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

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
# Starting headroom under the ceiling per lossy format; Opus at speech bitrates overshoots most.
LOSSY_HEADROOM_DB = {"mp3": 0.5, "m4a": 0.5, "opus": 1.0}
MAX_ENCODES = 3
# A lossy encoder may also shift loudness (MP3 at 32 kHz low-passes the sibilants that
# K-weighting counts): re-aim the levelling by the drift when it exceeds this.
LEVEL_TOLERANCE = 0.1


@dataclass(frozen=True)
class Finished:
    data: bytes
    format: AudioFormat
    sample_rate: int  # of the encoded stream
    report: LevelReport
    segment_levels: list[float] | None  # chapter mode: per-segment level before encoding
    encodes: int  # encode passes the decoded checks needed

    @property
    def mime(self) -> str:
        return self.format.mime

    @property
    def extension(self) -> str:
        return self.format.extension


def replace_notes(result: Finished, note: str) -> Finished:
    return replace(result, report=replace(result.report, notes=(*result.report.notes, note)))


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
    ``gap_s`` of silence after each but the last) into encoded bytes."""
    spec = get_format(fmt)
    rate = spec.pick_rate(sample_rate, target_rate)
    chapter = not isinstance(audio, np.ndarray)
    segments: list[np.ndarray] = []
    clip = np.zeros(0, np.float32)
    if isinstance(audio, np.ndarray):
        clip = resample(audio, sample_rate, rate)
    else:
        segments = [resample(s, sample_rate, rate) for s in audio]
        if gap_s > 0:
            for i in range(len(segments) - 1):
                x = as_frames(segments[i])
                pad = np.zeros((round(gap_s * rate), x.shape[1]), np.float32)
                joined = np.concatenate([x, pad], axis=0)
                segments[i] = joined[:, 0] if np.ndim(segments[i]) == 1 else joined

    headroom = LOSSY_HEADROOM_DB.get(spec.name, 0.0)
    aim = target
    for attempt in range(1, MAX_ENCODES + 1):
        ceiling = target.true_peak_db - headroom
        if chapter:
            levelled = normalize_chapter(
                segments, rate, aim, level_segments=level_segments, ceiling_db=ceiling
            )
            samples, before, segment_levels = (
                levelled.joined(), levelled.report, levelled.segment_levels
            )
        else:
            single = normalize(clip, rate, aim, ceiling_db=ceiling)
            samples, before, segment_levels = single.samples, single.report, None
        data = encode(samples, rate, spec.name, rate, bitrate=bitrate)
        if not spec.lossy:
            return Finished(data, spec, rate, before, segment_levels, attempt)
        report = _decoded_report(data, spec, target, before)
        over = report.true_peak_db - target.true_peak_db
        drift = report.level - target.level
        if not math.isfinite(report.level) or over <= 0 and abs(drift) <= LEVEL_TOLERANCE:
            return Finished(data, spec, rate, report, segment_levels, attempt)
        if over > 0:
            # Overshoot is not linear in the limiter ceiling (harder limiting, denser spectrum),
            # so step past the measured excess rather than exactly onto it.
            headroom += over + 0.25
        if abs(drift) > LEVEL_TOLERANCE:
            aim = replace(aim, level=aim.level - drift)

    result = Finished(data, spec, rate, report, segment_levels, MAX_ENCODES)
    if over <= 0:
        note = f"level {drift:+.2f} off target after {MAX_ENCODES} encodes"
        return replace_notes(result, note)
    # Last resort: the ceiling is a hard limit, loudness is not. Lossy codecs scale with their
    # input, so a static trim by the excess brings the decoded peak under.
    trim = 10.0 ** (-(over + 0.1) / 20.0)
    data = encode(samples * trim, rate, spec.name, rate, bitrate=bitrate)
    report = _decoded_report(data, spec, target, before)
    result = Finished(data, spec, rate, report, segment_levels, MAX_ENCODES + 1)
    note = f"trimmed {over + 0.1:.2f} dB after {MAX_ENCODES} encodes to hold the true-peak ceiling"
    return replace_notes(result, note)


def _decoded_report(
    data: bytes, spec: AudioFormat, target: LoudnessTarget, before: LevelReport
) -> LevelReport:
    decoded, decoded_rate = decode(data, spec.name)
    after = level_report(decoded, decoded_rate, target)
    return replace(
        after,
        input_level=before.input_level,
        gain_db=before.gain_db,
        limited_db=before.limited_db,
        notes=before.notes,
    )
