"""Loudness targets per job, normalisation to them, and chapter levelling.

A target is either a BS.1770 integrated loudness (voice-over -16 LUFS, EBU R128 -23 LUFS) or an
unweighted RMS (ACX audiobooks: -23…-18 dBFS RMS, peaks ≤ -3 dB, noise floor ≤ -60 dBFS), always
with a true-peak ceiling. Gain alone cannot meet both for speech, whose true peak typically sits
12-20 dB over its loudness, so the ceiling is enforced by the look-ahead limiter in ``limiter``
and the gain is re-fitted after limiting (the limiter takes a little loudness away) until the
measured level is within 0.05 of the target.

Chapters are levelled the way audiobook mastering tools do it: each segment is brought to the
chapter target on its own (segments synthesised at very different levels then match), the
chapter is limited as one programme (the look-ahead sees across segment joins), and per-segment
gains are re-fitted on the limited result. ``level_segments=False`` gives the plain programme
mode instead: one gain computed over the concatenation, relative levels left as rendered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.signal import butter, sosfiltfilt

from workers.post.audio.limiter import true_peak_limit
from workers.post.audio.meter import (
    NEG_INF,
    as_frames,
    integrated_loudness,
    noise_floor_db,
    rms_db,
    sample_peak_db,
    true_peak_db,
)

Measure = Literal["lufs", "rms"]

# Re-fit passes; in practice two or three reach FIT_TOLERANCE.
MAX_PASSES = 6
FIT_TOLERANCE = 0.05
DC_CUTOFF_HZ = 20.0
CAPPED_NOTE = "gain capped at {:g} dB: input too quiet to reach the target"


@dataclass(frozen=True)
class LoudnessTarget:
    """What a job's audio is finished to."""

    name: str = "voice_over"
    measure: Measure = "lufs"
    level: float = -16.0  # LUFS when measure is "lufs", dBFS RMS when "rms"
    true_peak_db: float = -1.0  # ceiling, dBTP
    tolerance: float = 0.5  # |measured - level| allowed for the report to pass
    rms_range: tuple[float, float] | None = None
    noise_floor_max_db: float | None = None
    # Never boost more than this: a near-silent render is more likely noise than quiet speech.
    max_gain_db: float = 40.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LoudnessTarget:
        """``{"preset": "acx"}``, a preset with overrides, or explicit fields.

        Also accepts ``integrated_lufs`` / ``rms_dbfs`` for ``level`` + ``measure`` and
        ``true_peak_dbtp`` for ``true_peak_db``, the names a job's JSON is likely to use.
        """
        raw = dict(data or {})
        preset = str(raw.pop("preset", "voice_over"))
        if preset not in PRESETS:
            raise ValueError(f"unknown loudness preset {preset!r}; known: {sorted(PRESETS)}")
        base = PRESETS[preset]
        if "integrated_lufs" in raw:
            raw["level"] = raw.pop("integrated_lufs")
            raw["measure"] = "lufs"
        if "rms_dbfs" in raw:
            raw["level"] = raw.pop("rms_dbfs")
            raw["measure"] = "rms"
        if "true_peak_dbtp" in raw:
            raw["true_peak_db"] = raw.pop("true_peak_dbtp")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown loudness fields: {sorted(unknown)}")
        if "rms_range" in raw and raw["rms_range"] is not None:
            lo, hi = raw["rms_range"]
            raw["rms_range"] = (float(lo), float(hi))
        target = replace(base, **raw)
        if target.measure not in ("lufs", "rms"):
            raise ValueError(f"measure must be 'lufs' or 'rms', got {target.measure!r}")
        if target.true_peak_db > 0:
            raise ValueError(f"true-peak ceiling must be ≤ 0 dBTP, got {target.true_peak_db}")
        return target


VOICE_OVER = LoudnessTarget()
EBU_R128 = LoudnessTarget(name="ebu_r128", level=-23.0, true_peak_db=-1.0)
# ACX asks for sample peaks ≤ -3 dBFS; a -3 dBTP ceiling is stricter, so it also holds after the
# MP3 encode ACX requires. -20 dBFS sits mid-range of ACX's -23…-18 window; delivery holds it to
# ±0.5 dB like the LUFS presets, so a file is never near the window's edges.
ACX = LoudnessTarget(
    name="acx",
    measure="rms",
    level=-20.0,
    true_peak_db=-3.0,
    tolerance=0.5,
    rms_range=(-23.0, -18.0),
    noise_floor_max_db=-60.0,
)
PRESETS: dict[str, LoudnessTarget] = {t.name: t for t in (VOICE_OVER, EBU_R128, ACX)}


@dataclass(frozen=True)
class LevelReport:
    """Levels of finished audio; -inf stands for silence (``to_dict`` makes it None)."""

    target: str
    measure: Measure
    level: float  # in the target's measure
    input_level: float
    loudness_lufs: float
    true_peak_db: float
    sample_peak_db: float
    rms_db: float
    noise_floor_db: float
    gain_db: float  # static gain before the limiter (chapter: the largest segment gain)
    limited_db: float  # deepest limiter gain reduction (approximate: peak over ceiling)
    passed: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Normalized:
    samples: np.ndarray  # float32, same shape as the input
    report: LevelReport


@dataclass(frozen=True)
class ChapterResult:
    segments: list[np.ndarray]  # float32, each the shape of its input
    report: LevelReport  # the chapter as one programme
    segment_levels: list[float]  # output level per segment, in the target's measure
    segment_gains_db: list[float]  # static gain per segment before the chapter limiter

    def joined(self) -> np.ndarray:
        return np.concatenate(self.segments, axis=0) if self.segments else np.zeros(0, np.float32)


def remove_dc(samples: np.ndarray, sample_rate: int, cutoff_hz: float = DC_CUTOFF_HZ) -> np.ndarray:
    """High-pass ``samples`` at ``cutoff_hz`` (2nd-order Butterworth, run forwards and backwards:
    zero phase, so timings and transients stay put). Returns float32 of the input's shape.

    A render with a DC offset (small random-weight models produce them) measures quiet in LUFS,
    since K-weighting ignores DC, yet its peaks sit high: levelling then boosts the offset into
    the limiter and stops at ``max_gain_db`` short of the target. Speech has nothing under 50 Hz.
    """
    x = as_frames(samples)
    if x.shape[0] <= 3 * 6:  # sosfiltfilt's padding needs a few samples
        out = (x - x.mean(axis=0)).astype(np.float32)
    else:
        sos = butter(2, cutoff_hz, btype="highpass", fs=sample_rate, output="sos")
        out = sosfiltfilt(sos, x, axis=0).astype(np.float32)
    return out[:, 0] if np.ndim(samples) == 1 else out


def measure_level(samples: np.ndarray, sample_rate: int, measure: Measure) -> float:
    if measure == "lufs":
        return integrated_loudness(samples, sample_rate)
    return rms_db(samples)


def level_report(
    samples: np.ndarray,
    sample_rate: int,
    target: LoudnessTarget,
    *,
    input_level: float = NEG_INF,
    gain_db: float = 0.0,
    limited_db: float = 0.0,
    notes: Sequence[str] = (),
) -> LevelReport:
    """Measure ``samples`` against ``target`` (does not change them)."""
    lufs = integrated_loudness(samples, sample_rate)
    rms = rms_db(samples)
    level = lufs if target.measure == "lufs" else rms
    tp = true_peak_db(samples, sample_rate)
    floor = noise_floor_db(samples, sample_rate)
    passed = math.isfinite(level) and abs(level - target.level) <= target.tolerance
    passed = passed and tp <= target.true_peak_db + 1e-6
    if target.rms_range is not None:
        passed = passed and target.rms_range[0] <= rms <= target.rms_range[1]
    if target.noise_floor_max_db is not None:
        passed = passed and floor <= target.noise_floor_max_db
    return LevelReport(
        target=target.name,
        measure=target.measure,
        level=level,
        input_level=input_level,
        loudness_lufs=lufs,
        true_peak_db=tp,
        sample_peak_db=sample_peak_db(samples),
        rms_db=rms,
        noise_floor_db=floor,
        gain_db=gain_db,
        limited_db=limited_db,
        passed=passed,
        notes=tuple(notes),
    )


class _GainFit:
    """Static gain for one measured level, re-fitted after each limiter pass.

    Under heavy limiting a dB of gain buys less than a dB of level, so plain ``gain += error``
    crawls; a secant step on the last two (gain, level) points converges in two or three passes.
    """

    def __init__(self, gain_db: float, max_gain_db: float) -> None:
        self.max_gain_db = max_gain_db
        self.capped = gain_db > max_gain_db
        self.gain_db = min(gain_db, max_gain_db)
        self._last: tuple[float, float] | None = None

    def step(self, level: float, target_level: float) -> bool:
        """``level`` is what ``gain_db`` produced; move towards the target. False: cannot."""
        error = target_level - level
        slope = 1.0
        if self._last is not None and abs(self.gain_db - self._last[0]) > 1e-9:
            slope = (level - self._last[1]) / (self.gain_db - self._last[0])
            slope = min(1.0, max(0.1, slope))
        if error > 0 and self.gain_db >= self.max_gain_db:
            return False
        self._last = (self.gain_db, level)
        wanted = self.gain_db + error / slope
        self.capped = self.capped or wanted > self.max_gain_db
        self.gain_db = min(wanted, self.max_gain_db)
        return True


def _gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    return np.asarray(x * (10.0 ** (gain_db / 20.0)))


def _ceiling(target: LoudnessTarget, ceiling_db: float | None) -> float:
    return target.true_peak_db if ceiling_db is None else min(target.true_peak_db, ceiling_db)


def normalize(
    samples: np.ndarray,
    sample_rate: int,
    target: LoudnessTarget = VOICE_OVER,
    *,
    ceiling_db: float | None = None,
) -> Normalized:
    """Bring one clip to ``target`` with its true peak under the ceiling.

    ``ceiling_db`` lowers the limiter ceiling below the target's (headroom for a lossy encoder);
    the report still judges against the target. Silent input is returned unchanged with a note;
    input shorter than 400 ms is measured ungated (see ``meter.integrated_loudness``).
    """
    x = as_frames(samples)
    mono = np.ndim(samples) == 1
    notes: list[str] = []
    if x.shape[0] < 0.4 * sample_rate and target.measure == "lufs":
        notes.append("shorter than one 400 ms gating block: ungated loudness used")
    level_in = measure_level(x, sample_rate, target.measure)
    if not math.isfinite(level_in):
        notes.append("silent input left unchanged")
        y = x.astype(np.float32)
        report = level_report(y, sample_rate, target, input_level=level_in, notes=notes)
        return Normalized(y[:, 0] if mono else y, report)

    ceiling = _ceiling(target, ceiling_db)
    fit = _GainFit(target.level - level_in, target.max_gain_db)
    y = x.astype(np.float32)
    for attempt in range(MAX_PASSES):
        y = true_peak_limit(_gain(x, fit.gain_db), sample_rate, ceiling)
        level = measure_level(y, sample_rate, target.measure)
        if abs(target.level - level) <= FIT_TOLERANCE or attempt == MAX_PASSES - 1:
            break
        if not fit.step(level, target.level):
            break
    gain_db = fit.gain_db
    if fit.capped:
        notes.append(CAPPED_NOTE.format(target.max_gain_db))
    limited_db = max(0.0, true_peak_db(x, sample_rate) + gain_db - ceiling)
    report = level_report(
        y,
        sample_rate,
        target,
        input_level=level_in,
        gain_db=gain_db,
        limited_db=limited_db,
        notes=notes,
    )
    return Normalized(y[:, 0] if mono else y, report)


def normalize_chapter(
    segments: Sequence[np.ndarray],
    sample_rate: int,
    target: LoudnessTarget = VOICE_OVER,
    *,
    level_segments: bool = True,
    ceiling_db: float | None = None,
) -> ChapterResult:
    """Finish several consecutive segments as one programme (see the module docstring).

    Silent segments keep unit gain and are left out of the levelling.
    """
    if not segments:
        raise ValueError("a chapter needs at least one segment")
    xs = [as_frames(s) for s in segments]
    channels = {x.shape[1] for x in xs}
    if len(channels) != 1:
        raise ValueError(f"segments disagree on channel count: {sorted(channels)}")
    mono = [np.ndim(s) == 1 for s in segments]
    bounds = np.cumsum([x.shape[0] for x in xs])[:-1]
    notes: list[str] = []

    levels_in = [measure_level(x, sample_rate, target.measure) for x in xs]
    live = [math.isfinite(level) for level in levels_in]
    joined_in = np.concatenate(xs, axis=0)
    programme_in = measure_level(joined_in, sample_rate, target.measure)
    if not any(live):
        notes.append("silent chapter left unchanged")
        outs = [x.astype(np.float32) for x in xs]
        report = level_report(
            joined_in, sample_rate, target, input_level=programme_in, notes=notes
        )
        return ChapterResult(
            segments=[o[:, 0] if m else o for o, m in zip(outs, mono, strict=True)],
            report=report,
            segment_levels=list(levels_in),
            segment_gains_db=[0.0] * len(xs),
        )

    programme_gain = target.level - programme_in
    fits = [
        _GainFit(target.level - lv if level_segments else programme_gain, target.max_gain_db)
        for lv in levels_in
    ]
    ceiling = _ceiling(target, ceiling_db)
    for attempt in range(MAX_PASSES):
        gains = [f.gain_db if ok else 0.0 for f, ok in zip(fits, live, strict=True)]
        joined = np.concatenate([_gain(x, g) for x, g in zip(xs, gains, strict=True)], axis=0)
        limited = true_peak_limit(joined, sample_rate, ceiling)
        outs = np.split(limited, bounds, axis=0)
        if level_segments:
            levels = [measure_level(o, sample_rate, target.measure) for o in outs]
        else:
            levels = [measure_level(limited, sample_rate, target.measure)] * len(xs)
        worst = max(abs(target.level - lv) for lv, ok in zip(levels, live, strict=True) if ok)
        if worst <= FIT_TOLERANCE or attempt == MAX_PASSES - 1:
            break
        moved = [
            f.step(lv, target.level)
            for f, lv, ok in zip(fits, levels, live, strict=True)
            if ok
        ]
        if not any(moved):
            break
    if any(f.capped for f, ok in zip(fits, live, strict=True) if ok):
        notes.append(CAPPED_NOTE.format(target.max_gain_db))

    segment_levels = (
        levels if level_segments else [measure_level(o, sample_rate, target.measure) for o in outs]
    )
    hottest = max(
        true_peak_db(x, sample_rate) + g for x, g, ok in zip(xs, gains, live, strict=True) if ok
    )
    limited_db = max(0.0, hottest - ceiling)
    report = level_report(
        limited,
        sample_rate,
        target,
        input_level=programme_in,
        gain_db=max(g for g, ok in zip(gains, live, strict=True) if ok),
        limited_db=limited_db,
        notes=notes,
    )
    return ChapterResult(
        segments=[o[:, 0] if m else o for o, m in zip(outs, mono, strict=True)],
        report=report,
        segment_levels=segment_levels,
        segment_gains_db=list(gains),
    )
