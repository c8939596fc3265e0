"""RNNoise denoising: alignment, shapes, silence, and a DNSMOS background score that improves."""

from __future__ import annotations

import numpy as np
import pytest

from workers.post.audio.denoise import denoise
from workers.post.audio.quality import dnsmos

RATE = 32000


def noisy(speech: np.ndarray, snr_db: float = 10.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 1, speech.shape)
    noise *= np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
    return (speech + noise).astype(np.float32)


def test_output_is_aligned_with_input(speech: np.ndarray) -> None:
    y = denoise(speech, RATE)
    assert y.shape == speech.shape and y.dtype == np.float32
    # Clean speech passes nearly untouched; the best lag must be 0 (RNNoise's delay removed).
    lags = range(-200, 201)
    core = speech[400:-400]
    scores = [float(np.dot(y[400 + k : len(y) - 400 + k], core)) for k in lags]
    assert lags[int(np.argmax(scores))] == 0


def test_denoise_raises_dnsmos_background_score(speech: np.ndarray) -> None:
    x = noisy(speech)
    y = denoise(x, RATE)
    before, after = dnsmos(x, RATE), dnsmos(y, RATE)
    assert after.bak > before.bak + 1.0
    assert after.ovrl > before.ovrl
    # Closer to the clean clip than the noisy input was: at least 3 dB better SNR.
    assert np.mean((y - speech) ** 2) < 0.5 * np.mean((x - speech) ** 2)


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_any_rate_and_stereo(speech: np.ndarray, rate: int) -> None:
    from workers.post.audio.resample import resample

    x = noisy(resample(speech[: RATE * 2], RATE, rate))
    y = denoise(x, rate)
    assert y.shape == x.shape
    stereo = np.stack([x, 0.5 * x], axis=1)
    ys = denoise(stereo, rate)
    assert ys.shape == stereo.shape
    assert np.mean(ys[:, 0] ** 2) < np.mean(x**2)


@pytest.mark.parametrize("n", [0, 1, 100])
def test_silence_and_tiny_input(n: int) -> None:
    assert denoise(np.zeros(n, np.float32), RATE).shape == (n,)
    assert not np.any(denoise(np.zeros(RATE // 10, np.float32), RATE))
    x = np.random.default_rng(0).normal(0, 0.1, n).astype(np.float32)
    assert denoise(x, RATE).shape == (n,)


def test_loud_input_does_not_wrap(speech: np.ndarray) -> None:
    # pyrnnoise casts to int16 without clipping; a full-scale input must not come back inverted.
    x = 4.0 * noisy(speech, snr_db=20)
    y = denoise(x, RATE)
    assert np.max(np.abs(y)) <= np.max(np.abs(x)) * 1.5
    assert float(np.dot(x, y)) > 0
