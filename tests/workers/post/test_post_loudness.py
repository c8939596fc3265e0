"""Limiter, loudness targets and presets, chapter levelling, short and silent input."""

from __future__ import annotations

import numpy as np
import pytest

from workers.post.audio.limiter import true_peak_limit
from workers.post.audio.loudness import (
    ACX,
    EBU_R128,
    VOICE_OVER,
    LoudnessTarget,
    normalize,
    normalize_chapter,
)
from workers.post.audio.meter import (
    integrated_loudness,
    noise_floor_db,
    rms_db,
    sample_peak_db,
    true_peak_db,
)

RATE = 32000


def test_limiter_leaves_quiet_audio_alone(speech: np.ndarray) -> None:
    x = speech * (10 ** (-6 / 20) / np.abs(speech).max())  # peaks well under -1 dBTP
    assert true_peak_db(x, RATE) < -4
    assert np.array_equal(true_peak_limit(x, RATE, -1.0), x)


def test_limiter_holds_the_true_peak_ceiling(speech: np.ndarray) -> None:
    x = 8.0 * speech  # peaks far above full scale
    y = true_peak_limit(x, RATE, -1.0)
    assert y.shape == x.shape
    assert true_peak_db(y, RATE) <= -1.0
    assert np.all(np.abs(y) <= np.abs(x) + 1e-7)  # gain only ever goes down


def test_limiter_catches_inter_sample_peaks() -> None:
    # Samples at ±0.707 (-3 dBFS) hide a 0 dBTP wave: a sample-peak limiter would pass it.
    n = np.arange(RATE)
    x = np.sin(np.pi * n / 2 + np.pi / 4) * np.hanning(RATE)
    assert sample_peak_db(x) < -2.9
    y = true_peak_limit(x, RATE, -1.0)
    assert true_peak_db(y, RATE) <= -1.0


def test_limiter_recovers_after_a_burst(speech: np.ndarray) -> None:
    burst = 8.0 * speech[: RATE // 2]
    quiet = 0.05 * speech
    x = np.concatenate([burst, np.zeros(RATE // 4), quiet])
    y = true_peak_limit(x, RATE, -1.0)
    # 250 ms after the burst (look-ahead 5 ms, hold 40 ms) the gain is back to unity.
    start = len(burst) + RATE // 4
    np.testing.assert_allclose(y[start:], x[start:], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("target", [VOICE_OVER, EBU_R128], ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [0.05, 1.0, 6.0])
def test_normalize_hits_lufs_targets(
    speech: np.ndarray, target: LoudnessTarget, scale: float
) -> None:
    out = normalize(scale * speech, RATE, target)
    assert out.samples.shape == speech.shape
    assert out.samples.dtype == np.float32
    assert integrated_loudness(out.samples, RATE) == pytest.approx(target.level, abs=0.5)
    assert true_peak_db(out.samples, RATE) <= target.true_peak_db
    assert out.report.passed


def test_custom_target_from_job_dict(speech: np.ndarray) -> None:
    target = LoudnessTarget.from_dict({"integrated_lufs": -19, "true_peak_dbtp": -2})
    assert (target.measure, target.level, target.true_peak_db) == ("lufs", -19, -2)
    out = normalize(speech, RATE, target)
    assert integrated_loudness(out.samples, RATE) == pytest.approx(-19, abs=0.5)
    assert true_peak_db(out.samples, RATE) <= -2


def test_target_presets_and_validation() -> None:
    assert LoudnessTarget.from_dict(None) == VOICE_OVER
    assert LoudnessTarget.from_dict({"preset": "ebu_r128"}).level == -23
    acx = LoudnessTarget.from_dict({"preset": "acx"})
    assert acx.measure == "rms" and acx.rms_range == (-23, -18) and acx.true_peak_db == -3
    with pytest.raises(ValueError, match="preset"):
        LoudnessTarget.from_dict({"preset": "loud"})
    with pytest.raises(ValueError, match="unknown loudness fields"):
        LoudnessTarget.from_dict({"lufs": -16})
    with pytest.raises(ValueError, match="ceiling"):
        LoudnessTarget.from_dict({"true_peak_db": 1.0})


def test_acx_meets_rms_and_peak_bounds(speech: np.ndarray) -> None:
    # Room tone at -80 dBFS RMS under the speech and alone for a second at the end.
    x = np.concatenate([0.3 * speech, np.zeros(RATE)])
    x = x + np.random.default_rng(1).normal(0, 10 ** (-80 / 20), len(x))
    out = normalize(x, RATE, ACX)
    rms = rms_db(out.samples)
    assert -23 <= rms <= -18
    assert rms == pytest.approx(ACX.level, abs=0.5)
    assert sample_peak_db(out.samples) <= -3
    assert true_peak_db(out.samples, RATE) <= -3
    # Static gain raises the room tone by the same amount; the report carries it.
    assert out.report.noise_floor_db == pytest.approx(-80 + out.report.gain_db, abs=0.5)
    assert out.report.noise_floor_db == pytest.approx(noise_floor_db(out.samples, RATE))
    assert out.report.passed


def test_acx_flags_a_loud_noise_floor(speech: np.ndarray) -> None:
    x = np.concatenate([0.3 * speech, np.zeros(RATE)])
    x = x + np.random.default_rng(2).normal(0, 10 ** (-50 / 20), len(x))
    out = normalize(x, RATE, ACX)
    assert -23 <= rms_db(out.samples) <= -18
    assert out.report.noise_floor_db > -60
    assert not out.report.passed


def test_chapter_levels_segments_rendered_at_different_levels(
    sentences: dict[str, np.ndarray],
) -> None:
    # One sentence rendered quiet (-30 dB), one normal, one 12 dB hot with overs.
    segments = [0.03 * sentences["a"], sentences["b"], 4.0 * sentences["c"]]
    before = [integrated_loudness(s, RATE) for s in segments]
    assert max(before) - min(before) > 40
    chapter = normalize_chapter(segments, RATE, VOICE_OVER)
    assert [s.shape for s in chapter.segments] == [s.shape for s in segments]
    after = [integrated_loudness(s, RATE) for s in chapter.segments]
    assert max(after) - min(after) < 1.0
    joined = chapter.joined()
    assert integrated_loudness(joined, RATE) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(joined, RATE) <= -1.0
    assert chapter.report.passed


def test_chapter_programme_mode_keeps_relative_levels(sentences: dict[str, np.ndarray]) -> None:
    segments = [0.5 * sentences["a"], sentences["b"], 0.5 * sentences["c"]]
    before = [integrated_loudness(s, RATE) for s in segments]
    chapter = normalize_chapter(segments, RATE, EBU_R128, level_segments=False)
    assert len(set(chapter.segment_gains_db)) == 1  # one gain for the whole programme
    after = [integrated_loudness(s, RATE) for s in chapter.segments]
    np.testing.assert_allclose(np.diff(after), np.diff(before), atol=0.1)
    assert integrated_loudness(chapter.joined(), RATE) == pytest.approx(-23, abs=0.5)


def test_short_input_is_levelled(speech: np.ndarray) -> None:
    clip = speech[RATE // 2 : RATE // 2 + RATE // 5]  # 200 ms, under one gating block
    out = normalize(clip, RATE, VOICE_OVER)
    assert out.samples.shape == clip.shape
    assert integrated_loudness(out.samples, RATE) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(out.samples, RATE) <= -1.0
    assert any("ungated" in note for note in out.report.notes)


@pytest.mark.parametrize("n", [0, 1, 100, RATE])
def test_silence_is_left_unchanged(n: int) -> None:
    out = normalize(np.zeros(n, np.float32), RATE, VOICE_OVER)
    assert out.samples.shape == (n,)
    assert not np.any(out.samples)
    assert not out.report.passed
    assert any("silent" in note for note in out.report.notes)
    assert out.report.to_dict()["level"] is None


def test_quiet_noise_is_not_boosted_past_the_cap() -> None:
    x = np.random.default_rng(3).normal(0, 10 ** (-65 / 20), RATE)  # about -63 LUFS
    out = normalize(x, RATE, VOICE_OVER)
    assert out.report.gain_db == pytest.approx(VOICE_OVER.max_gain_db)
    assert not out.report.passed
    assert any("capped" in note for note in out.report.notes)


def test_chapter_with_silent_and_short_segments(sentences: dict[str, np.ndarray]) -> None:
    short = sentences["b"][RATE // 2 : RATE // 2 + RATE // 8]  # 125 ms
    segments = [sentences["a"], np.zeros(RATE // 2), short, 0.1 * sentences["c"]]
    chapter = normalize_chapter(segments, RATE, VOICE_OVER)
    assert not np.any(chapter.segments[1])
    assert chapter.segment_gains_db[1] == 0.0
    for i in (0, 2, 3):
        assert integrated_loudness(chapter.segments[i], RATE) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(chapter.joined(), RATE) <= -1.0


def test_silent_chapter_and_stereo() -> None:
    chapter = normalize_chapter([np.zeros(100), np.zeros(RATE)], RATE, VOICE_OVER)
    assert not chapter.report.passed and not np.any(chapter.joined())
    with pytest.raises(ValueError):
        normalize_chapter([], RATE, VOICE_OVER)
    with pytest.raises(ValueError, match="channel"):
        normalize_chapter([np.zeros((10, 2)), np.zeros(10)], RATE, VOICE_OVER)


def test_stereo_is_normalised_with_linked_channels(speech: np.ndarray) -> None:
    x = np.stack([speech, 0.5 * speech], axis=1)  # [n, 2]
    out = normalize(x, RATE, VOICE_OVER)
    assert out.samples.shape == x.shape
    assert integrated_loudness(out.samples, RATE) == pytest.approx(-16, abs=0.5)
    assert true_peak_db(out.samples, RATE) <= -1.0
    # One gain for both channels keeps the image: the ratio stays 2:1 where nothing limits.
    loud = np.abs(out.samples[:, 1]) > 1e-3
    np.testing.assert_allclose(out.samples[loud, 0] / out.samples[loud, 1], 2.0, rtol=1e-4)


def test_below_the_absolute_gate_counts_as_silence() -> None:
    # BS.1770 ignores blocks under -70 LUFS, so this hiss has no integrated loudness at all.
    x = np.random.default_rng(4).normal(0, 10 ** (-100 / 20), RATE).astype(np.float32)
    out = normalize(x, RATE, VOICE_OVER)
    assert np.array_equal(out.samples, x)
    assert any("silent" in note for note in out.report.notes)
