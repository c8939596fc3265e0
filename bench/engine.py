"""The engine benchmark the engine issue asks for, in one run: T2S tokens/s with and without the
KV cache at batch 1 and 8 (``bench/engine_t2s.py``), then the SoVITS real-time factor with torch
and ONNX Runtime (``bench/engine_sovits.py``), both on full-size random v2 models.

    python bench/engine.py [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    common = ["--device", args.device]
    status = 0
    for script, extra in (("engine_t2s.py", []), ("engine_sovits.py", ["--threads", str(args.threads)])):
        print(f"\n### {script}", flush=True)
        status |= subprocess.call([sys.executable, str(HERE / script), *common, *extra])
    return status


if __name__ == "__main__":
    sys.exit(main())
