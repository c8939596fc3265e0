"""Registered-model loading in a worker: time to load one full-size random v2 pair through the
model LRU (``jobs.model_cache``: sha256 check + checkpoint load), the weight bytes the LRU counts
for each half, and the process's resident-memory growth.

    python bench/models.py                     # CPU, fp32
    python bench/models.py --device cuda --precision fp16

The weights are random; only sizes and timings mean anything. The first load of each half is
timed, then a second, cached lookup (should be ~0).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.model_cache import ModelEngines  # noqa: E402
from jobs.models import ModelRef, file_sha256  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from workers.assets import ModelPaths, make_tiny  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    args = parser.parse_args()
    from workers.gpt.model import write_random_checkpoint as write_t2s
    from workers.sovits.model import v2_config, write_random_checkpoint as write_sovits

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_tiny(root)  # HuBERT and BERT (tiny: only the pair is measured)
        gpt, sovits = root / "pair/gpt.ckpt", root / "pair/sovits.pth"
        gpt.parent.mkdir()
        write_t2s(gpt, None, seed=1)
        write_sovits(sovits, v2_config(full_size=True), seed=1, full_size=True)
        ref = ModelRef("bench", "v2", str(gpt), str(sovits), file_sha256(gpt), file_sha256(sovits))
        settings = Settings(home=root, models_dir=root, device=args.device, precision=args.precision)
        engines = ModelEngines(settings)
        # Warm-up on the tiny default pair: BERT and HuBERT are shared by every model and load
        # once per process, so they stay out of the per-pair figures.
        tiny_gpt, tiny_sovits = ModelPaths.under(root).gpt, ModelPaths.under(root).sovits
        warm = ModelRef("warm", "v2", str(tiny_gpt), str(tiny_sovits), file_sha256(tiny_gpt), file_sha256(tiny_sovits))
        engines.semantic(warm)
        engines.voice_encoder(warm)
        print(f"device {args.device}, {args.precision}; files: gpt {gpt.stat().st_size / 2**20:.1f} MiB, sovits {sovits.stat().st_size / 2**20:.1f} MiB")
        for half, load in (("gpt (T2S)", engines.semantic), ("sovits", engines.acoustic)):
            before, held = rss_mib(), engines.resident_bytes
            start = time.perf_counter()
            load(ref)
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            load(ref)
            cached = time.perf_counter() - start
            counted = engines.resident_bytes - held
            print(
                f"{half:10s} load {loaded:6.2f} s   cached lookup {cached * 1e3:6.3f} ms   "
                f"weights {counted / 2**20:7.1f} MiB   RSS +{rss_mib() - before:7.1f} MiB"
            )
        print(
            f"LRU bound: {settings.model_cache_max_models} files, {settings.model_cache_max_bytes / 2**30:.1f} GiB "
            f"per process; resident now {engines.resident_bytes / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
