"""T2S decoding speed: tokens/s with and without the KV cache, batch 1 and 8, on the full-size
v2 model with random weights (nothing to download).

    python bench/engine_t2s.py [--device cuda] [--dtype float16] [--new-tokens 100]

EOS is masked at the output head so every sequence decodes exactly the requested number of
tokens. Time includes the prefill. The no-cache path recomputes the whole sequence each step, so
its cost per token grows with length; on CPU it runs fewer tokens by default (--nocache-tokens)
and its tokens/s is then a flattering figure for that path.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# Run as a plain script from anywhere: the repository root holds the ``workers`` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.gpt.model import SamplingParams, T2SConfig, T2SRequest, Text2SemanticModel, generate, random_model


def _requests(batch: int, phones: int, prompt: int, new_tokens: int) -> list[T2SRequest]:
    g = torch.Generator().manual_seed(0)
    params = SamplingParams(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35, max_steps=new_tokens)
    return [
        T2SRequest(
            phones=torch.randint(1, 732, (phones,), generator=g),
            bert=torch.randn(1024, phones, generator=g),
            prompt=torch.randint(0, 1024, (prompt,), generator=g),
            seed=i,
            params=params,
        )
        for i in range(batch)
    ]


def _timed(model: Text2SemanticModel, requests: list[T2SRequest], use_cache: bool) -> tuple[float, int]:
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = generate(model, requests, use_cache=use_cache)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(r.tokens) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: shared hosts)")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--nocache-tokens", type=int, default=None, help="default: 20 on CPU, else --new-tokens")
    parser.add_argument("--phones", type=int, default=40)
    parser.add_argument("--prompt", type=int, default=50)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = random_model(T2SConfig(), seed=0, device=args.device, dtype=dtype)
    eos = model.config.eos

    def mask_eos(_m: object, _i: object, out: torch.Tensor) -> torch.Tensor:
        out[:, eos] = float("-inf")
        return out

    model.ar_predict_layer.register_forward_hook(mask_eos)
    nocache_tokens = args.nocache_tokens or (min(args.new_tokens, 20) if args.device == "cpu" else args.new_tokens)
    _timed(model, _requests(1, 8, 8, 3), use_cache=True)  # warm-up

    print(
        f"T2S v2 full size ({model.config.num_layers} layers, {model.config.hidden_dim} dim, "
        f"{sum(p.numel() for p in model.parameters()):,} params), random weights, {args.device} "
        f"{args.dtype}, {args.threads} thread(s); {args.phones} phones + {args.prompt} prompt tokens, top_k 15"
    )
    print(f"{'mode':<9}{'batch':>6}{'tok/seq':>9}{'seconds':>10}{'tokens/s':>10}{'ms/step':>9}")
    for use_cache, steps in ((True, args.new_tokens), (False, nocache_tokens)):
        for batch in (int(b) for b in args.batches.split(",")):
            seconds, tokens = _timed(model, _requests(batch, args.phones, args.prompt, steps), use_cache)
            mode = "kv-cache" if use_cache else "no-cache"
            rate, step_ms = tokens / seconds, 1000 * seconds / steps
            print(f"{mode:<9}{batch:>6}{steps:>9}{seconds:>10.2f}{rate:>10.1f}{step_ms:>9.1f}")


if __name__ == "__main__":
    main()
