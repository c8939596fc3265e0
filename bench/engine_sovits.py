"""SoVITS decode real-time factor on a full-size random v2 model, torch and onnxruntime paths.

    python bench/engine_sovits.py                     # CPU, 1 thread, ~5 s of audio
    python bench/engine_sovits.py --device cuda --dtype fp16

RTF = decode wall time / audio duration (lower is better; < 1 is faster than real time). The
weights are random, so only the timing means anything. Median of --repeats runs after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.sovits.model import SoVITSModel, write_random_checkpoint  # noqa: E402

SAMPLE_RATE = 32000
TOKENS_PER_SECOND = 25
PHONES_PER_SECOND = 12  # roughly the phone rate of normal speech


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="torch path dtype")
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length to decode")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch and onnxruntime)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    n_codes = max(1, round(args.seconds * TOKENS_PER_SECOND))
    audio_s = n_codes * 1280 / SAMPLE_RATE
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1024, (1, 1, n_codes), generator=gen)
    phones = torch.randint(1, 732, (1, max(1, round(args.seconds * PHONES_PER_SECOND))), generator=gen)
    spec = torch.rand(1, 1025, 250, generator=gen) * 5  # ~5 s reference spectrogram

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "random_v2.pth"
        write_random_checkpoint(ckpt, seed=0, full_size=True)
        start = time.perf_counter()
        model = SoVITSModel.load(ckpt, device=device, dtype=dtype)
        load_s = time.perf_counter() - start
        style = model.style_vector([spec])

        print(f"device={device} torch_dtype={args.dtype} threads={args.threads} torch={torch.__version__}")
        print(f"input: {n_codes} semantic tokens, {phones.shape[1]} phones -> {audio_s:.2f} s of 32 kHz audio")
        print(f"load full-size v2 checkpoint: {load_s:.2f} s")

        def run_torch() -> object:
            return model.decode(codes, phones, style, noise_scale=0.5)

        t_torch = _timed(run_torch, args.repeats, sync)
        print(f"torch       decode {t_torch * 1000:8.1f} ms   RTF {t_torch / audio_s:.3f}")

        if not args.skip_onnx:
            import onnxruntime as ort

            from workers.sovits.model.onnx_decoder import OnnxDecoder, export_decoder

            onnx_path = Path(tmp) / "decoder.onnx"
            start = time.perf_counter()
            export_decoder(model, onnx_path)
            export_s = time.perf_counter() - start
            runner = OnnxDecoder(onnx_path, device=args.device, intra_op_threads=args.threads)
            style_f32 = style.float().cpu()

            def run_ort() -> object:
                return runner.decode(codes, phones, style_f32, noise_scale=0.5)

            t_ort = _timed(run_ort, args.repeats, lambda: None)
            print(
                f"onnxruntime decode {t_ort * 1000:8.1f} ms   RTF {t_ort / audio_s:.3f}   "
                f"(fp32, {runner.providers[0]}, ort {ort.__version__}, export {export_s:.1f} s)"
            )


if __name__ == "__main__":
    main()
