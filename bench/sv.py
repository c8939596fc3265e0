"""Speaker-verification (ERes2NetV2) embedding time for one reference, full-size random weights.

    python bench/sv.py                          # CPU, 5 s reference, 1 and 2 threads
    python bench/sv.py --device cuda --threads 1

This runs once per reference when a v2Pro/v2ProPlus voice is onboarded. Times are the median of
--repeats runs after a warm-up, split into the front end (resample + fbank) and the whole
``embed``; the weights are random, so only the timing means anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.sovits.model.sv import SpeakerVerifier, write_random_sv_checkpoint  # noqa: E402

SAMPLE_RATE = 32000


def _timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seconds", type=float, default=5.0, help="reference length")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to compare")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, int(args.seconds * SAMPLE_RATE)).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "pretrained_eres2netv2w24s4ep4.ckpt"
        write_random_sv_checkpoint(ckpt, seed=0, full_size=True)
        start = time.perf_counter()
        verifier = SpeakerVerifier.load(ckpt, device=device)
        load_s = time.perf_counter() - start

    frames = int(verifier.features(wav).shape[1])
    print(f"device={device} torch={torch.__version__} reference={args.seconds:.1f} s ({frames} fbank frames)")
    print(f"load full-size SV checkpoint: {load_s:.2f} s; embedding width {verifier.embedding_dim}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        front = _timed(lambda: verifier.features(wav), args.repeats, sync)
        whole = _timed(lambda: verifier.embed(wav), args.repeats, sync)
        print(
            f"threads={threads}: embed {whole * 1000:.0f} ms (front end {front * 1000:.1f} ms), "
            f"{whole / args.seconds:.3f} s per second of reference"
        )


if __name__ == "__main__":
    main()
