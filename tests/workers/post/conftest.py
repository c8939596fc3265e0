"""Speech fixtures for the post-stage audio tests, rendered by espeak-ng at run time (no audio is
committed) and resampled to 32 kHz, the rate GPT-SoVITS v2 delivers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from workers.post.audio.resample import resample

RATE = 32000
SENTENCES = {
    "a": "The quick brown fox jumps over the lazy dog. Audio finishing should be transparent.",
    "b": "Another sentence, spoken by the same synthetic voice, for the similarity check.",
    "c": "Chapter three begins on a quiet morning, with rain against the window.",
}


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # Two cores shared by several people: keep torch (resemblyzer) from spreading out.
    torch.set_num_threads(1)


def render(tmp: Path, text: str, voice: str = "en", pitch: int = 50) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is required for these tests (Debian: apt-get install espeak-ng)")
    out = tmp / f"{abs(hash((text, voice, pitch)))}.wav"
    subprocess.run([espeak, "-v", voice, "-p", str(pitch), "-w", str(out), text], check=True)
    x, rate = sf.read(out, dtype="float32")
    return resample(x, rate, RATE)


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def speech(speech_dir: Path) -> np.ndarray:
    """About 5 s of English speech at 32 kHz."""
    return render(speech_dir, SENTENCES["a"])


@pytest.fixture(scope="session")
def sentences(speech_dir: Path) -> dict[str, np.ndarray]:
    return {key: render(speech_dir, text) for key, text in SENTENCES.items()}


@pytest.fixture(scope="session")
def other_voice(speech_dir: Path) -> np.ndarray:
    """The sentence of ``speech`` in a different espeak voice (female variant, higher pitch)."""
    return render(speech_dir, SENTENCES["a"], voice="en+f3", pitch=80)
