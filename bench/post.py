"""Post-stage cost: seconds of CPU wall time per minute of audio for each finishing step, on about
one minute of espeak-ng speech at 32 kHz (GPT-SoVITS's output rate) with light white noise.

    python -m bench.post [--seconds 60] [--threads 1]      (from the repository root)

Model loading (DNSMOS sessions, the d-vector encoder) is timed separately from scoring.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from workers.post.audio import FORMATS, VOICE_OVER, encode, finish, resample
from workers.post.audio.limiter import true_peak_limit
from workers.post.audio.loudness import normalize
from workers.post.audio.meter import integrated_loudness, true_peak_db

RATE = 32000
TEXT = (
    "It was late in the afternoon when the letter finally arrived. The house had been quiet all "
    "day, and the only sound was the steady ticking of the clock in the hall. She opened the "
    "envelope carefully, as if the paper itself might break, and read the first line twice. "
    "Nothing in it was surprising, and yet everything about it felt new. Outside, the light "
    "was fading over the hills, and the first lamps were coming on in the village below. "
    "She thought of the journey ahead, of the people she would meet, and of the work that "
    "waited for her in the city. There would be time later for doubts. For now there was only "
    "the letter, the clock, and the long evening that stretched out before her like a road. "
)


def speech(seconds: float) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("espeak-ng is needed (Debian: apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-w", str(path), TEXT], check=True)
        x, rate = sf.read(path, dtype="float32")
    x = resample(x, rate, RATE)
    reps = int(np.ceil(seconds * RATE / len(x)))
    x = np.tile(x, reps)[: round(seconds * RATE)]
    noise = np.random.default_rng(0).normal(0, 10 ** (-45 / 20), x.shape)
    return (x + noise).astype(np.float32)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from workers.post.audio import quality

    torch.set_num_threads(args.threads)
    quality.ORT_THREADS = args.threads
    from workers.post.audio.denoise import denoise

    x = speech(args.seconds)
    minutes = len(x) / RATE / 60
    hot = 3.0 * x  # needs real limiting
    rows: list[tuple[str, float]] = []

    def row(name: str, seconds: float) -> None:
        rows.append((name, seconds))
        print(f"{name:<34} {seconds / minutes:8.3f} s per audio minute", flush=True)

    print(f"audio: {len(x) / RATE:.1f} s at {RATE} Hz, threads={args.threads}")
    row("denoise (RNNoise, incl. 48k resample)", timed(lambda: denoise(x, RATE)))
    row("loudness measure (BS.1770)", timed(lambda: integrated_loudness(hot, RATE)))
    row("true-peak measure (6x oversample)", timed(lambda: true_peak_db(hot, RATE)))
    row("true-peak limit", timed(lambda: true_peak_limit(hot, RATE, -1.0)))
    row("normalize -16 LUFS (fit + limit)", timed(lambda: normalize(hot, RATE, VOICE_OVER)))
    levelled = normalize(hot, RATE, VOICE_OVER).samples
    for fmt in FORMATS:
        row(f"encode {fmt}", timed(lambda fmt=fmt: encode(levelled, RATE, fmt)))
    for fmt in ("wav16", "mp3", "opus", "m4a"):
        row(f"finish {fmt} (level+encode+verify)", timed(lambda fmt=fmt: finish(hot, RATE, fmt)))
    load = timed(lambda: quality.dnsmos(x[: RATE], RATE))
    print(f"{'DNSMOS model load + 1 s clip':<34} {load:8.3f} s once per process")
    row("DNSMOS (reference 1 s hop)", timed(lambda: quality.dnsmos(x, RATE)))
    row("DNSMOS (9.01 s hop)", timed(lambda: quality.dnsmos(x, RATE, hop_s=9.01)))
    voice = quality.speaker_embedding(x[: RATE * 5], RATE)  # also loads the encoder
    row("speaker similarity", timed(lambda: quality.speaker_similarity(x, RATE, voice)))
    # What the quality gate pays per segment: a short segment is looped to one 9.01 s DNSMOS
    # window, so sentence-sized segments cost more per minute than one long clip.
    clips = [x[i : i + 5 * RATE] for i in range(0, len(x) - 5 * RATE + 1, 5 * RATE)]
    row(
        "gate score, 5 s segments",
        timed(lambda: [(quality.dnsmos(c, RATE, hop_s=9.01), quality.speaker_similarity(c, RATE, voice)) for c in clips]),
    )
    # Rows overlap (finish includes normalize), so only a realistic chain is summed.
    chain = ("denoise (RNNoise, incl. 48k resample)", "finish mp3 (level+encode+verify)",
             "DNSMOS (9.01 s hop)", "speaker similarity")
    total = sum(seconds for name, seconds in rows if name in chain)
    print(f"{'chain: denoise+finish mp3+DNSMOS+sim':<34} {total / minutes:8.3f} s per audio minute")


if __name__ == "__main__":
    main()
