"""Level measurements against textbook facts and against ffmpeg's independent ebur128 meter."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from workers.post.audio.meter import (
    integrated_loudness,
    noise_floor_db,
    oversampling_factor,
    rms_db,
    sample_peak_db,
    true_peak_db,
)

FULL_SCALE_SINE_DB = 20 * np.log10(np.sqrt(0.5))  # -3.01: RMS of a full-scale sine


def sine(
    freq: float, rate: int, seconds: float, amp: float = 1.0, phase: float = 0.0
) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float64)


def faded(x: np.ndarray, rate: int, seconds: float = 0.05) -> np.ndarray:
    # An abrupt start is a step, and a band-limited step rings over its level (Gibbs): fade in
    # and out so only the steady tone sets the peak.
    k = round(seconds * rate)
    ramp = np.sin(np.linspace(0, np.pi / 2, k)) ** 2
    env = np.ones(len(x))
    env[:k], env[-k:] = ramp, ramp[::-1]
    return x * env


def test_quarter_rate_sine_hides_its_peak_between_samples() -> None:
    # sin(pi n / 2 + pi / 4) samples to ±0.7071 only; the continuous wave peaks at 1.0.
    rate = 48000
    x = faded(sine(rate / 4, rate, 1.0, phase=np.pi / 4), rate)
    assert sample_peak_db(x) == pytest.approx(-3.01, abs=0.01)
    assert true_peak_db(x, rate) == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("rate", [48000, 32000])
def test_bs1770_reference_tone(rate: int) -> None:
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    x = sine(997, rate, 2.0)
    assert integrated_loudness(x, rate) == pytest.approx(-3.01, abs=0.1)
    assert integrated_loudness(0.1 * x, rate) == pytest.approx(-23.01, abs=0.1)


def test_short_clip_is_measured_ungated() -> None:
    rate = 32000
    x = 0.1 * sine(997, rate, 0.2)  # under one 400 ms gating block
    assert integrated_loudness(x, rate) == pytest.approx(-23.01, abs=0.15)


def test_silence_and_empty_read_minus_infinity() -> None:
    rate = 32000
    for x in (np.zeros(rate), np.zeros(10), np.zeros(0)):
        assert integrated_loudness(x, rate) == float("-inf")
        assert true_peak_db(x, rate) == float("-inf")
        assert rms_db(x) == float("-inf")
        assert noise_floor_db(x, rate) == float("-inf")


def test_rms_and_noise_floor(speech: np.ndarray) -> None:
    rate = 32000
    assert rms_db(sine(1000, rate, 1.0)) == pytest.approx(FULL_SCALE_SINE_DB, abs=0.01)
    # Room tone at -70 dBFS RMS under the speech and alone for the last second.
    x = np.concatenate([speech, np.zeros(rate)])
    x = x + np.random.default_rng(0).normal(0, 10 ** (-70 / 20), len(x))
    assert noise_floor_db(x, rate) == pytest.approx(-70.0, abs=0.5)


def test_oversampling_reaches_192k() -> None:
    assert oversampling_factor(48000) == 4
    assert oversampling_factor(32000) == 6
    assert oversampling_factor(44100) * 44100 >= 192000


def ffmpeg_ebur128(path: Path) -> tuple[float, float]:
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required (Debian: apt-get install ffmpeg)"
    proc = subprocess.run(
        [ffmpeg, "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=true",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )
    summary = proc.stderr[proc.stderr.rindex("Summary:"):]
    lufs = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))
    return lufs, peak


def test_agrees_with_ffmpeg_ebur128(speech: np.ndarray, tmp_path: Path) -> None:
    rate = 32000
    x = 2.5 * speech  # overs between samples, as an untreated render can have
    path = tmp_path / "x.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    lufs, peak = ffmpeg_ebur128(path)
    # ffmpeg prints one decimal; its true-peak resampler differs from ours.
    assert integrated_loudness(x, rate) == pytest.approx(lufs, abs=0.1)
    assert true_peak_db(x, rate) == pytest.approx(peak, abs=0.2)
