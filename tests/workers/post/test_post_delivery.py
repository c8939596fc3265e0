"""The delivery loop (``audio.pipeline``): every format a job can ask for, and the whole-book M4B
and MP3, under every loudness preset, decoded and measured the way a listener's player decodes
them: level within the preset's tolerance, true peak (oversampled) under its ceiling. A file the
loop cannot correct raises ``LoudnessUnmet`` instead of being delivered.

The programme is a chapter of real speech and a speech-like pulse-train render (dense harmonics,
sharp glottal pulses: what encoders overshoot most on) at very different levels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.speech import voiced
from workers.post.audio import codecs, pipeline
from workers.post.audio.chapters import ChapterMark
from workers.post.audio.codecs import FORMATS, decode
from workers.post.audio.loudness import CAPPED_NOTE, PRESETS, LoudnessTarget, normalize, remove_dc
from workers.post.audio.meter import integrated_loudness, rms_db, true_peak_db
from workers.post.audio.pipeline import LoudnessUnmet, deliver_book, finish

RATE = 32000


def level(samples: np.ndarray, rate: int, target: LoudnessTarget) -> float:
    return integrated_loudness(samples, rate) if target.measure == "lufs" else rms_db(samples)


def assert_meets(samples: np.ndarray, rate: int, target: LoudnessTarget) -> None:
    measured = level(samples, rate, target)
    assert abs(measured - target.level) <= 0.5, (target.name, measured)
    assert true_peak_db(samples, rate) <= target.true_peak_db, (target.name, true_peak_db(samples, rate))


@pytest.fixture(scope="module")
def chapter(speech: np.ndarray) -> list[np.ndarray]:
    return [speech[: int(2.5 * RATE)], 0.2 * voiced(2.0, RATE, seed=1), voiced(1.5, RATE, f0=180.0, seed=2)]


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_meets_every_preset_after_decoding(chapter: list[np.ndarray], fmt: str, preset: str) -> None:
    target = PRESETS[preset]
    done = finish(chapter, RATE, fmt, target, gap_s=0.3)
    decoded, rate = decode(done.data, fmt)
    assert rate == done.sample_rate
    assert abs(len(decoded) / rate - (sum(map(len, chapter)) / RATE + 0.6)) < 0.1
    assert_meets(decoded, rate, target)
    # The report describes the decoded file, not the samples before the encoder.
    assert done.report.level == pytest.approx(level(decoded, rate, target), abs=1e-3)
    assert (done.mime, done.extension) == (FORMATS[fmt].mime, FORMATS[fmt].extension)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("fmt", ["m4b", "mp3"])
def test_whole_book_files_meet_every_preset_after_decoding(chapter: list[np.ndarray], fmt: str, preset: str) -> None:
    target = PRESETS[preset]
    book = np.concatenate([chapter[0], np.zeros(RATE, np.float32), chapter[1], chapter[2]])
    marks = [ChapterMark("One", 0.0, 3.5), ChapterMark("Two", 3.5, len(book) / RATE)]
    done = deliver_book(book, RATE, fmt, target, marks, "A Title")
    decoded, rate = decode(done.data, "m4a" if fmt == "m4b" else "mp3")
    assert rate == 44100
    assert_meets(decoded, rate, target)


def test_a_file_that_cannot_meet_its_target_fails(chapter: list[np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    # The limiter aimed 2 dB over the ceiling and one encode allowed: the miss is raised, not delivered.
    monkeypatch.setitem(pipeline.LOSSY_HEADROOM_DB, "opus", -2.0)
    monkeypatch.setattr(pipeline, "MAX_ENCODES", 1)
    with pytest.raises(LoudnessUnmet, match="dBTP"):
        finish(chapter, RATE, "opus", PRESETS["voice_over"])
    # With the loop's corrections it is met.
    monkeypatch.setattr(pipeline, "MAX_ENCODES", 4)
    done = finish(chapter, RATE, "opus", PRESETS["voice_over"])
    assert done.encodes > 1
    assert_meets(*decode(done.data, "opus"), PRESETS["voice_over"])


def test_encodes_are_counted(chapter: list[np.ndarray]) -> None:
    before = codecs.ENCODES.copy()
    finish(chapter, RATE, "wav16", PRESETS["ebu_r128"])
    assert codecs.ENCODES - before == {"wav16": 1}


def test_dc_offset_is_removed_before_levelling() -> None:
    # A render riding on a DC offset measures quiet in LUFS (K-weighting ignores DC) but its
    # peaks are high: levelled as is, the offset is boosted into the limiter and the gain cap.
    render = 0.1 * voiced(2.0, RATE, seed=3) + 0.3
    stuck = normalize(render, RATE, PRESETS["ebu_r128"])
    assert CAPPED_NOTE.format(40) in stuck.report.notes and stuck.report.level < -25
    clean = remove_dc(render, RATE)
    assert abs(float(np.mean(clean))) < 1e-3 and clean.shape == render.shape
    levelled = normalize(clean, RATE, PRESETS["ebu_r128"])
    assert levelled.report.notes == () and abs(levelled.report.level + 23.0) <= 0.05
