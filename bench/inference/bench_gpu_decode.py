"""The llama runtime on a GPU (CuPy, weights resident) beside the C path on the same machine, same weights.

    python bench/inference/bench_gpu_decode.py [--gen 1000] [--prompt 512] [--xp cupy|numpy] [--layers 30]

Runs where the SmolLM2 file cannot travel (the lent GPU machine): the model has SmolLM2-135M's exact shapes
(30 layers, dim 576, ffn 1536, 9 heads / 3 KV heads, vocab 49,152; Q4_1 layers, Q8_0 embedding) with
seeded random weights, so the work per token is the real model's. Prints agreement with the C path
(logit cosine, greedy tokens), prompt tok/s, decode tok/s and the wall time of a --gen token greedy run
(the seed's target: 1,000 tokens in < 5 s), each beside the C path measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from inference.runtime import DictTensorSource, Llama, LlamaConfig  # noqa: E402
from native import modelmath  # noqa: E402

LAYER = {"attn_q": "dd", "attn_k": "kd", "attn_v": "kd", "attn_output": "dd", "ffn_gate": "fd", "ffn_up": "fd",
         "ffn_down": "df"}


def synthetic(layers: int, seed: int = 0) -> tuple[DictTensorSource, LlamaConfig]:
    cfg = LlamaConfig(n_layer=layers, dim=576, ffn=1536, n_head=9, n_head_kv=3, vocab=49152, context_length=2048,
                      eps=1e-5, rope_base=100000.0)
    rng = np.random.default_rng(seed)
    size = {"d": cfg.dim, "k": cfg.n_head_kv * cfg.head_dim, "f": cfg.ffn}

    def q(rows: int, cols: int, qtype: str, scale: float = 0.05):
        w = (rng.standard_normal((rows, cols), np.float32) * scale).astype(np.float32)
        return (qtype, (rows, cols), modelmath.quantize(w, qtype))

    ones = ("F32", (cfg.dim,), np.ones(cfg.dim, np.float32).tobytes())
    items = {"token_embd.weight": q(cfg.vocab, cfg.dim, "Q8_0", 1.0), "output_norm.weight": ones}
    for i in range(layers):
        items[f"blk.{i}.attn_norm.weight"] = items[f"blk.{i}.ffn_norm.weight"] = ones
        for name, (r, c) in LAYER.items():
            items[f"blk.{i}.{name}.weight"] = q(size[r], size[c], "Q4_1")
    return DictTensorSource(items), cfg


def greedy(model: Llama, prompt: list[int], n: int) -> tuple[list[int], float]:
    cache = model.new_cache()
    logits = model.forward(prompt, cache).logits
    out, t = [], time.perf_counter()
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = model.forward([out[-1]], cache).logits
    return out, time.perf_counter() - t


def prompt_rate(model: Llama, toks: list[int], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        model.forward(toks, model.new_cache())
        best = min(best, time.perf_counter() - t)
    return len(toks) / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen", type=int, default=1000)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--xp", choices=["cupy", "numpy"], default="cupy")
    args = ap.parse_args()
    xp = __import__(args.xp)
    t = time.perf_counter()
    source, cfg = synthetic(args.layers)
    n_ctx = min(2048, args.prompt + args.gen + 16)
    c_model = Llama(source, cfg, n_ctx=n_ctx, backend="c")
    gpu = Llama(source, cfg, n_ctx=n_ctx, backend="gpu", xp=xp)
    device = xp.cuda.runtime.getDeviceProperties(0)["name"].decode() if args.xp == "cupy" else "host (numpy)"
    print(f"# {device}; {os.cpu_count()} CPU cores; {args.layers} layers; built in {time.perf_counter() - t:.1f} s")

    rng = np.random.default_rng(1)
    toks = rng.integers(0, cfg.vocab, args.prompt).tolist()
    a = gpu.forward(toks[:64], gpu.new_cache()).logits
    b = c_model.forward(toks[:64], c_model.new_cache()).logits
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    ga, _ = greedy(gpu, toks[:64], 32)
    gb, _ = greedy(c_model, toks[:64], 32)
    same = next((i for i, (x, y) in enumerate(zip(ga, gb, strict=True)) if x != y), 32)
    print(f"agreement with the C path: logit cosine {cos:.6f}; greedy tokens identical for the first {same}/32")

    greedy(gpu, toks[:8], 4)  # warm-up: kernels compiled, memory pools filled
    pg, pc = prompt_rate(gpu, toks), prompt_rate(c_model, toks)
    print(f"prompt ({len(toks)} tokens): gpu {pg:,.0f} tok/s, C {pc:,.0f} tok/s, ratio {pg / pc:.2f}x")
    _, tg = greedy(gpu, toks[:16], args.gen)
    _, tc = greedy(c_model, toks[:16], args.gen)
    print(f"greedy {args.gen} tokens after a 16-token prompt: gpu {tg:.2f} s ({args.gen / tg:,.1f} tok/s), "
          f"C {tc:.2f} s ({args.gen / tc:,.1f} tok/s), ratio {tc / tg:.2f}x; seed target < 5 s for 1,000: "
          f"{'met' if tg * 1000 / args.gen < 5 else 'missed'}")


if __name__ == "__main__":
    main()
