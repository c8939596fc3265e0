"""Render speed with the real engine on full-size random weights (nothing to download).

    python bench/render.py [--steps 40] [--burst 32] [--requests 8] [--threads 1] [--skip-pools]

One run prints, each with its baseline measured in the same run:
1. T2S ms/step at batch 1: the previous default (eager torch, KV cache) vs ours (ONNX Runtime
   step, cache bound in place), and the opt-in int8 step with its quality figures against fp32
   (greedy token agreement, teacher-forced top-1 agreement, max logit difference, waveform
   distance after SoVITS); SoVITS decode torch vs ONNX Runtime (the new CPU default).
2. Audio seconds per wall second for a burst of one-segment jobs through the real pools (HTTP
   API, PostgreSQL, Redis, one worker process per queue, local folder storage), batching off vs
   on, with the per-stage split.
3. First audio byte p50/p95 of ``POST /v1/tts`` for a 60-character English sentence, streaming
   off vs on.
Random weights never emit EOS, so the pools run ``bench.render_engine``: the product engine with
a fixed generation length (2 tokens per target phone). A section that cannot be measured prints
``not measured: <why>``. The host's load average is printed before and after: these 2-core hosts
are shared, so compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from workers.assets import ModelPaths, make_tiny  # noqa: E402
from workers.gpt.model import Text2SemanticModel  # noqa: E402
from workers.gpt.model.generate import _BoundDecoder, _CachedDecoder  # noqa: E402
from workers.gpt.model.onnx_step import BoundStepSession, export_bound_step, quantize_int8  # noqa: E402
from workers.sovits.model import SoVITSModel  # noqa: E402

SENTENCE_60 = "The old harbour woke slowly as the first fishing boats left."  # 60 characters
REFERENCE = "The quick brown fox jumps over the lazy dog near the river bank."
SAMPLE_RATE = 32000
SAMPLES_PER_TOKEN = 1280


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------- 1. the step, in process


def _inputs(model: Text2SemanticModel) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    phones = torch.randint(1, 732, (60,), generator=g)  # prompt + target phones of a sentence
    text = model.embed_text(phones, torch.randn(1024, 60, generator=g))
    return text, torch.randint(0, 1024, (75,), generator=g)  # 3 s of prompt tokens


def _run(
    make: Callable[[], _CachedDecoder], steps: int, forced: list[int] | None = None
) -> tuple[list[int], list[torch.Tensor], list[float]]:
    """Greedy (EOS masked, as with random weights it never wins anyway) or teacher-forced decode:
    tokens, logits of each step, seconds of each step after the prefill."""
    decoder = make()
    prompt_len = 75
    logits = decoder.first()
    tokens, seen, times = [], [], []
    for i in range(steps):
        seen.append(logits[0].clone())
        token = int(logits[0, :1024].argmax()) if forced is None else forced[i]
        tokens.append(token)
        started = time.perf_counter()
        logits = decoder.next(torch.tensor([token]), torch.tensor([prompt_len + i]))
        times.append(time.perf_counter() - started)
    return tokens, seen, times


def step_section(paths: ModelPaths, work: Path, steps: int, rounds: int) -> None:
    print(f"\n== 1. T2S step at batch 1, full-size v2 (random weights), {torch.get_num_threads()} thread(s)")
    model = Text2SemanticModel.load(paths.gpt)
    started = time.perf_counter()
    fp32_path = export_bound_step(model, work / "step.onnx")
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    int8_path = quantize_int8(fp32_path, work / "step-int8.onnx")
    quant_s = time.perf_counter() - started
    print(f"export {export_s:.1f} s ({fp32_path.stat().st_size / 1e6:.0f} MB), int8 quantization {quant_s:.1f} s "
          f"({int8_path.stat().st_size / 1e6:.0f} MB); done once per model version, beside the models")
    threads = torch.get_num_threads()
    fp32, int8 = BoundStepSession(fp32_path, threads=threads), BoundStepSession(int8_path, threads=threads)
    text, prompt = _inputs(model)
    makers: dict[str, Callable[[], _CachedDecoder]] = {
        "torch eager (previous default)": lambda: _CachedDecoder(model, [text], [prompt], steps),
        "onnx bound fp32 (new CPU default)": lambda: _BoundDecoder(model, [text], [prompt], steps, fp32),
        "onnx bound int8 (opt-in)": lambda: _BoundDecoder(model, [text], [prompt], steps, int8),
    }
    per_step: dict[str, list[float]] = {name: [] for name in makers}
    results: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    with torch.inference_mode():
        for name, make in makers.items():  # warm-up
            _run(make, 3)
        for _ in range(rounds):  # interleaved, so a burst of load elsewhere hits every path alike
            for name, make in makers.items():
                tokens, logits, times = _run(make, steps)
                per_step[name] += times
                results[name] = (tokens, logits)
    base = statistics.median(per_step["torch eager (previous default)"]) * 1000
    print(f"{'path':<36}{'ms/step p50':>12}{'p90':>8}{'speed-up':>10}")
    for name, times in per_step.items():
        p50 = statistics.median(times) * 1000
        print(f"{name:<36}{p50:>12.1f}{pct(times, 0.9) * 1000:>8.1f}{base / p50:>9.2f}x")

    ref_tokens, ref_logits = results["onnx bound fp32 (new CPU default)"]
    torch_tokens, torch_logits = results["torch eager (previous default)"]
    drift = max(float((a - b).abs().max()) for a, b in zip(ref_logits, torch_logits))
    print(f"fp32 onnx vs torch: greedy tokens {'identical' if ref_tokens == torch_tokens else 'DIFFER'}, "
          f"max logit diff {drift:.2e}")
    with torch.inference_mode():
        free_tokens, _, _ = _run(makers["onnx bound int8 (opt-in)"], steps)
        _, forced_logits, _ = _run(makers["onnx bound int8 (opt-in)"], steps, forced=ref_tokens)
    agree = sum(a == b for a, b in zip(free_tokens, ref_tokens)) / steps
    prefix = next((i for i, (a, b) in enumerate(zip(free_tokens, ref_tokens)) if a != b), steps)
    top1 = sum(int(f[:1024].argmax()) == t for f, t in zip(forced_logits, ref_tokens)) / steps
    logit_diff = max(float((a - b).abs().max()) for a, b in zip(forced_logits, ref_logits))
    sovits = SoVITSModel.load(paths.sovits)
    phones = torch.randint(1, 300, (1, 30), generator=torch.Generator().manual_seed(1))
    style = torch.randn(1, sovits.config.gin_channels, 1, generator=torch.Generator().manual_seed(2))

    def wave(tokens: list[int]) -> np.ndarray:
        codes = torch.tensor(tokens).view(1, 1, -1)
        return sovits.decode(codes, phones, style, noise_scale=0.0)[0, 0].numpy()

    w_ref, w_int8 = wave(ref_tokens), wave(free_tokens)
    distance = float(np.linalg.norm(w_int8 - w_ref) / max(np.linalg.norm(w_ref), 1e-12))
    print(f"int8 quality vs fp32 (random weights, {steps} steps): greedy token agreement {agree:.0%} "
          f"(identical prefix {prefix} tokens), teacher-forced top-1 {top1:.0%}, max logit diff "
          f"{logit_diff:.3f}, waveform distance ||w8-w32||/||w32|| {distance:.3f} (noise_scale 0)")
    print("  (with trained weights the figures differ; rerun this bench on them before turning int8 on)")

    codes = torch.tensor(ref_tokens * 2).view(1, 1, -1)  # ~3 s of audio
    sovits_section(sovits, paths, work, codes, phones, style)


def sovits_section(
    sovits: SoVITSModel, paths: ModelPaths, work: Path, codes: torch.Tensor, phones: torch.Tensor, style: torch.Tensor
) -> None:
    from workers.sovits.model.onnx_decoder import OnnxDecoder, export_decoder

    decoder = OnnxDecoder(export_decoder(sovits, work / "sovits.onnx"), intra_op_threads=torch.get_num_threads())
    audio_s = codes.shape[2] * SAMPLES_PER_TOKEN / SAMPLE_RATE

    def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
        fn()
        times, out = [], None
        for _ in range(2):
            started = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - started)
        assert out is not None
        return min(times), out

    t_torch, w_torch = timed(lambda: sovits.decode(codes, phones, style, 0.5, generator=torch.Generator().manual_seed(0)))
    t_onnx, w_onnx = timed(lambda: decoder.decode(codes, phones, style, 0.5, generator=torch.Generator().manual_seed(0)))
    diff = float((w_torch - w_onnx).abs().max())
    print(f"SoVITS decode of {audio_s:.1f} s: torch {t_torch:.2f} s (RTF {t_torch / audio_s:.2f}), onnx "
          f"{t_onnx:.2f} s (RTF {t_onnx / audio_s:.2f}), {t_torch / t_onnx:.2f}x; max |diff| {diff:.1e}")


# ---------------------------------------------------------------- 2 and 3: the real pools


def pools_section(models: Path, work: Path, burst: int, requests: int) -> None:
    import httpx
    from sqlalchemy import create_engine, select, text

    from db.migrate import upgrade
    from db.models import Job, Segment
    from tests.support.services import Cluster, create_database, distributed_env, drop_database, redis_url, start_s3, wait_for
    from tests.support.speech import encode, speech_wav

    print(f"\n== 2. burst of {burst} one-segment jobs through the real pools (load {load()})")
    database_url = create_database()
    upgrade(database_url)
    s3 = start_s3()  # distributed_env wants one; storage below is the local folder
    env = distributed_env(database_url, redis_url(12), s3)
    env.update(
        VOXMILL_STORAGE="local",
        VOXMILL_STORAGE_DIR=str(work / "objects"),
        VOXMILL_HOME=str(work / "home"),
        VOXMILL_MODELS_DIR=str(models),
        VOXMILL_ENGINE="bench.render_engine",
        VOXMILL_ENGINE_OPTIONS_JSON=json.dumps({"tokens_per_phone": 2.0}),
        VOXMILL_RATE_LIMIT_REQUESTS_PER_S="0",
        VOXMILL_RATE_LIMIT_CHARS_PER_MIN="0",
        VOXMILL_MAX_QUEUED_JOBS_PER_TENANT="0",
        VOXMILL_SYNC_TIMEOUT_S="300",
    )
    cluster = Cluster(env=env, log_dir=work)
    engine = create_engine(database_url)
    try:
        for queue in ("gpt", "sovits", "post"):
            # Full-size models load (and export their ONNX graphs once) before "ready".
            cluster.start(f"worker-{queue}", "worker", "--queue", queue, ready="ready.", timeout=900)
        api = cluster.api()
        samples, rate = speech_wav(REFERENCE)
        voice = httpx.post(
            f"{api}/v1/voices",
            files={"audio": ("v.wav", encode(samples, rate, "wav"), "audio/wav")},
            data={"language": "en", "transcript": REFERENCE},
            timeout=300,
        ).json()["id"]
        wait_for(lambda: httpx.get(f"{api}/v1/voices/{voice}").json()["status"] == "ready", 600, "voice", interval=0.5)
        client = httpx.Client(base_url=api, timeout=600)
        # Warm-up: the first job loads the models and exports the ONNX graphs in each worker.
        warm = client.post("/v1/jobs", json={"text": "Warm up.", "voice_id": voice}).json()["id"]
        status = wait_for(
            lambda: (s := client.get(f"/v1/jobs/{warm}").json())["status"] in ("succeeded", "failed", "cancelled") and s,
            900,
            "warm-up",
            interval=0.5,
        )
        if status["status"] != "succeeded":
            raise RuntimeError(f"the warm-up job ended {status['status']}: {status.get('error')}")

        def run_burst(label: str, tag: str) -> None:
            # Short, and the same shape in both runs (the tag only makes new content keys).
            sentences = [f"Burst {tag} line {i}, on the quay." for i in range(burst)]
            started = time.perf_counter()
            ids = [uuid.UUID(client.post("/v1/jobs", json={"text": s, "voice_id": voice}).json()["id"]) for s in sentences]

            def done() -> bool:
                with engine.connect() as c:
                    left = c.execute(
                        select(Job.id).where(Job.id.in_(ids), Job.status.not_in(["succeeded", "failed", "cancelled"]))
                    ).all()
                return not left

            wait_for(done, 1800, "the burst", interval=0.5)
            wall = time.perf_counter() - started
            with engine.connect() as c:
                durations = c.execute(select(Segment.duration_s).where(Segment.job_id.in_(ids))).scalars().all()
                failed = c.execute(select(Job.id).where(Job.id.in_(ids), Job.status != "succeeded")).all()
                sizes = c.execute(select(Segment.gpt_batch_size).where(Segment.job_id.in_(ids))).scalars().all()
                split = c.execute(
                    text(
                        """SELECT from_status, to_status, avg(extract(epoch FROM created_at - prev)) AS s, count(*) AS n
                           FROM (SELECT entity, from_status, to_status, created_at,
                                        lag(created_at) OVER (PARTITION BY entity_id ORDER BY id) AS prev
                                 FROM state_transitions WHERE job_id = ANY(:ids) AND entity = 'segment') t
                           WHERE prev IS NOT NULL GROUP BY from_status, to_status ORDER BY s DESC"""
                    ),
                    {"ids": ids},
                ).all()
                spans = {
                    stage: c.execute(
                        text(
                            """SELECT extract(epoch FROM max(created_at) FILTER (WHERE to_status = :done)
                                                   - min(created_at) FILTER (WHERE to_status = :running))
                               FROM state_transitions WHERE job_id = ANY(:ids) AND entity = 'segment'"""
                        ),
                        {"ids": ids, "running": f"{stage}_running", "done": f"{stage}_done"},
                    ).scalar_one()
                    for stage in ("gpt", "sovits")
                }
            audio = sum(d or 0.0 for d in durations)
            batched = [b for b in sizes if b]
            mean_batch = f", mean T2S batch {statistics.mean(batched):.1f}" if batched else ""
            print(f"{label}: {len(ids) - len(failed)}/{len(ids)} jobs succeeded, {audio:.1f} s of audio in "
                  f"{wall:.1f} s wall = {audio / wall:.2f} audio s per wall s{mean_batch}")
            for stage, span in spans.items():
                if span:
                    print(f"  {stage} stage: first claim to last done {float(span):.1f} s = "
                          f"{audio / float(span):.2f} audio s per wall s")
            print("  per-stage mean time of a segment (s), from its state transitions:")
            for row in split:
                print(f"    {row.from_status}->{row.to_status:<22}{float(row.s):8.2f}   (n={row.n})")

        run_burst("batching off", "A")
        # The same pools, the gpt pool restarted batching: 8 threads, one batched T2S per group.
        gpt = next(p for p in cluster.processes if p.name == "worker-gpt" and p.alive())
        gpt.stop()
        cluster.env.update(VOXMILL_GPT_BATCH_SIZE="8", VOXMILL_BATCH_WAIT_MS="50")
        cluster.start("worker-gpt", "worker", "--queue", "gpt", "--name", "batched", ready="ready.", timeout=900)
        run_burst("batching on (gpt pool, up to 8 segments, 50 ms wait)", "B")
        print("  (the sovits pool still decodes one segment per task: batching there is not built)")

        print(f"\n== 3. first audio byte of POST /v1/tts, {len(SENTENCE_60)}-character English sentence, "
              f"{requests} requests one after another, gpt pool batching (load {load()})")
        firsts, totals = [], []
        for i in range(requests):
            started = time.perf_counter()
            first = None
            received = 0
            # A new seed per request: a new content key, so the render cache never answers.
            body = {"text": SENTENCE_60, "voice_id": voice, "format": "wav", "params": {"seed": 100 + i}}
            with client.stream("POST", "/v1/tts", json=body) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if first is None and received > 44:
                        first = time.perf_counter() - started
            totals.append(time.perf_counter() - started)
            if first is not None:
                firsts.append(first)
        print(f"streaming off: first audio byte p50 {pct(firsts, 0.5) * 1000:.0f} ms, p95 {pct(firsts, 0.95) * 1000:.0f} ms; "
              f"last byte p50 {pct(totals, 0.5) * 1000:.0f} ms")
        print("streaming on: not measured: token-level streaming is not built in this branch")
    finally:
        engine.dispose()
        cluster.stop_all()
        s3.stop()
        drop_database(database_url)


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the pools
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="T2S steps per timed run (section 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed runs per path (section 1)")
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="POST /v1/tts requests (section 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads in section 1")
    parser.add_argument("--models", type=Path, default=None, help="full-size random models (default: written to a temp dir)")
    parser.add_argument("--skip-pools", action="store_true", help="section 1 only")
    parser.add_argument("--skip-step", action="store_true", help="sections 2 and 3 only")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="voxmill-bench-render-"))
    print(f"load average at start: {load()} ({os.cpu_count()} cores, shared)")
    models = args.models or work / "models"
    if not (models / "READY").is_file():
        started = time.perf_counter()
        make_tiny(models, full_size=True)
        print(f"full-size random models written in {time.perf_counter() - started:.0f} s")
    if args.skip_step:
        print("\n== 1. T2S step: not measured: --skip-step")
    else:
        step_section(ModelPaths.under(models), work, args.steps, args.rounds)
    if args.skip_pools:
        print("\n== 2. burst through the pools: not measured: --skip-pools")
        print("== 3. first audio byte: not measured: --skip-pools")
    else:
        pools_section(models, work, args.burst, args.requests)
    print(f"\nload average at end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
