"""SoVITS decode real-time factor of each model generation, side by side in one run, on full-size
random models (torch and onnxruntime paths), with each model's load time and resident memory.

    python bench/engine_sovits.py                                  # v2 and v2ProPlus, CPU, 1 thread
    python bench/engine_sovits.py --generations v1,v2,v2Pro,v2ProPlus --skip-onnx
    python bench/engine_sovits.py --device cuda --dtype fp16

RTF = decode wall time / audio duration (lower is better; < 1 is faster than real time). The
weights are random, so only the timing means anything. Median of --repeats runs after a warm-up.
v2 is the baseline: every generation runs in the same process on the same inputs, one after the
other. Load = ``SoVITSModel.load`` of the official-format file (read, key check, weight-norm
fold), timed in a fresh child process (after one small warm-up load there, so torch's lazy imports
are not billed to it); RSS growth = that child's resident set after the load minus before it
(/proc/self/statm), i.e. what one more loaded model of that generation costs a worker. A fresh
process matters: in this one, memory freed by writing the random files would be reused. Pro decodes use a voice style fused with a random 20480-wide
speaker-verification embedding; the SV model itself is not part of the decode and is not loaded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.sovits.model import GENERATIONS, SoVITSModel, write_random_checkpoint  # noqa: E402

SAMPLE_RATE = 32000
TOKENS_PER_SECOND = 25
PHONES_PER_SECOND = 12  # roughly the phone rate of normal speech
SV_DIM = 20480


def _timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (allocations, kernel selection)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; the second field of statm, in pages)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_load(path: Path, warm: Path, device: str, dtype: torch.dtype) -> dict[str, float]:
    """Load time and RSS growth of one model, in this (fresh) process."""
    SoVITSModel.load(warm)
    gc.collect()
    before = rss_bytes()
    start = time.perf_counter()
    model = SoVITSModel.load(path, device=device, dtype=dtype)
    load_s = time.perf_counter() - start
    gc.collect()
    tensor_bytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {"load_s": load_s, "rss_mib": (rss_bytes() - before) / 2**20, "tensor_mib": tensor_bytes / 2**20}


def _child_load(path: Path, warm: Path, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure-load", str(path), str(warm), "--device", args.device,
         "--dtype", args.dtype, "--threads", str(args.threads)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure-load", nargs=2, metavar=("CKPT", "WARM"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="torch path dtype")
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length to decode")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch and onnxruntime)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generations", default="v2,v2ProPlus", help=f"comma list of {', '.join(GENERATIONS)}")
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()
    generations = [g.strip() for g in args.generations.split(",") if g.strip()]
    unknown = set(generations) - set(GENERATIONS)
    if unknown:
        parser.error(f"unknown generation(s) {', '.join(sorted(unknown))}; choose from {', '.join(GENERATIONS)}")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    if args.measure_load:
        print(json.dumps(measure_load(Path(args.measure_load[0]), Path(args.measure_load[1]), args.device, dtype)))
        return
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    n_codes = max(1, round(args.seconds * TOKENS_PER_SECOND))
    audio_s = n_codes * 1280 / SAMPLE_RATE
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1024, (1, 1, n_codes), generator=gen)
    phones = torch.randint(1, 322, (1, max(1, round(args.seconds * PHONES_PER_SECOND))), generator=gen)
    spec = torch.rand(1, 1025, 250, generator=gen) * 5  # ~5 s reference spectrogram
    sv = torch.randn(1, SV_DIM, generator=gen) * 0.24  # the spread of real ERes2NetV2 embeddings

    print(f"device={device} torch_dtype={args.dtype} threads={args.threads} torch={torch.__version__}")
    print(f"input: {n_codes} semantic tokens, {phones.shape[1]} phones -> {audio_s:.2f} s of 32 kHz audio")
    rows: list[tuple[str, dict[str, float], float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for generation in generations:
            files[generation] = Path(tmp) / f"random_{generation}.pth"
            write_random_checkpoint(files[generation], seed=0, full_size=True, generation=generation)
        # One small load first: the first meta-device model pulls in torch modules (seconds),
        # which would otherwise be billed to the measured load.
        warm = Path(tmp) / "warm.pth"
        write_random_checkpoint(warm, seed=0)
        params: dict[str, int] = {}
        for generation in generations:
            loaded = _child_load(files[generation], warm, args)
            model = SoVITSModel.load(files[generation], device=device, dtype=dtype)
            params[generation] = sum(p.numel() for p in model.parameters())
            style = model.style_vector([spec], [sv] if model.is_pro else None)

            def run_torch(model: SoVITSModel = model, style: torch.Tensor = style) -> object:
                return model.decode(codes, phones, style, noise_scale=0.5)

            t_torch = _timed(run_torch, args.repeats, sync)
            t_ort = None
            if not args.skip_onnx:
                from workers.sovits.model.onnx_decoder import OnnxDecoder, export_decoder

                onnx_path = Path(tmp) / f"decoder_{generation}.onnx"
                export_decoder(model, onnx_path)
                runner = OnnxDecoder(onnx_path, device=args.device, intra_op_threads=args.threads)
                style_f32 = style.float().cpu()

                def run_ort(runner: OnnxDecoder = runner, style_f32: torch.Tensor = style_f32) -> object:
                    return runner.decode(codes, phones, style_f32, noise_scale=0.5)

                t_ort = _timed(run_ort, args.repeats, lambda: None)
                del runner
            rows.append((generation, loaded, t_torch, t_ort))
            del model

    base = next((r for r in rows if r[0] == "v2"), rows[0])
    print(f"{'generation':<10} {'params':>11} {'load s':>7} {'RSS +MiB':>9} {'tensors MiB':>11} {'torch ms':>9} "
          f"{'RTF':>6} {'x base':>6} {'ort ms':>8} {'ort RTF':>7}")
    for generation, loaded, t_torch, t_ort in rows:
        ort = f"{t_ort * 1000:8.1f} {t_ort / audio_s:7.3f}" if t_ort is not None else f"{'-':>8} {'-':>7}"
        print(
            f"{generation:<10} {params[generation]:>11,} {loaded['load_s']:7.2f} {loaded['rss_mib']:9.1f} "
            f"{loaded['tensor_mib']:11.1f} {t_torch * 1000:9.1f} {t_torch / audio_s:6.3f} "
            f"{t_torch / base[2]:6.2f} {ort}"
        )
    print(f"(x base: torch decode time relative to {base[0]} in this run; load and RSS from a fresh process each)")


if __name__ == "__main__":
    main()
