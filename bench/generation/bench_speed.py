"""Generation speed with retrieval and AtomicStream recording beside plain decode (issue #7: <= 10% slower).

Same run, same machine, same context tokens, same greedy tokens:
- plain: the runtime's `generate()` on the context tokens, no attention read, nothing recorded;
- full: the service (`generation_start`): hybrid retrieval (query embedding + search), context layout,
  a GenerationRun with its snapshot, attention of the last 6 layers per token turned into per-atom mass,
  top-5 alternatives, steps written in batches of 16 with their usage, credit checks, the provenance
  activity at the end.
Decode speed is tokens after the first over the time after the first; time to first token (TTFT) is from
the call to the first token (full: retrieval + layout + prefill; plain: prefill).

    .venv/bin/python bench/generation/bench_speed.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import _world


def plain(loaded, tokens: list[int], max_tokens: int) -> tuple[float, float, list[int]]:
    from inference.runtime import SamplingParams, generate

    t0 = time.perf_counter()
    first, out = None, []
    for step in generate(loaded.llama, loaded.tokenizer, tokens, SamplingParams(max_tokens=max_tokens)):
        if first is None:
            first = time.perf_counter()
        out.append(step.token)
    end = time.perf_counter()
    return (first - t0) * 1000, (len(out) - 1) / (end - first), out


def full(world, prompt: str, k: int, max_tokens: int):
    from inference.generation import GenerationSpec, generation_start

    t0 = time.perf_counter()
    stream = generation_start(tenant=world.tenant, spec=GenerationSpec(
        model=world.model, prompt=prompt, k=k, sampling={"max_tokens": max_tokens}))
    first, out = None, []
    for event in stream:
        if event["type"] == "token":
            if first is None:
                first = time.perf_counter()
            out.append(event["token"])
    end = time.perf_counter()  # includes closing the run and recording the activity
    return (first - t0) * 1000, (len(out) - 1) / (end - first), out, stream.ctx.tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()
    max_tokens, n_prompts, repeats = (64, 3, 2) if args.quick else (128, 6, 3)
    world = _world.build("bench_generation_speed", services=_world._corpus.QUICK_SERVICES, max_sections=300)
    from inference.atom_source import load_runtime

    loaded = load_runtime(world.model, n_ctx=2048)
    prompts = [loaded.tokenizer.decode(list(s.ids[:40])) for s in world.sections[::max(1, len(world.sections) // n_prompts)][:n_prompts]]
    full(world, prompts[0], args.k, 8)  # warm: query embedder, model pages
    rows = {"plain": ([], []), "full": ([], [])}
    ctx_sizes, same = [], True
    for _ in range(repeats):
        for prompt in prompts:
            ttft, tps, toks, ctx = full(world, prompt, args.k, max_tokens)
            rows["full"][0].append(ttft)
            rows["full"][1].append(tps)
            p_ttft, p_tps, p_toks = plain(loaded, ctx, max_tokens)
            rows["plain"][0].append(p_ttft)
            rows["plain"][1].append(p_tps)
            ctx_sizes.append(len(ctx))
            same &= p_toks == toks
    _world.flush_redis(world.env)
    med = {name: (statistics.median(t), statistics.median(s)) for name, (t, s) in rows.items()}
    ratio = med["full"][1] / med["plain"][1]
    print(f"\nMachine: {_world.machine()}; {len(prompts)} prompts x {repeats}, k={args.k}, {max_tokens} tokens greedy, "
          f"context {statistics.median(ctx_sizes):.0f} tokens (median); same tokens both ways: {same}")
    print(_world.table(["path", "decode tok/s (median)", "TTFT ms (median)", "decode vs plain"],
                       [["plain decode (runtime generate, nothing recorded)", f"{med['plain'][1]:.1f}",
                         f"{med['plain'][0]:.0f} (prefill)", "1.00×"],
                        ["retrieval + attribution + AtomicStream recording", f"{med['full'][1]:.1f}",
                         f"{med['full'][0]:.0f} (retrieval + prefill)", f"**{ratio:.2f}×**"]]))
    print(f"overhead: {(1 - ratio) * 100:.1f}% (aim <= 10%): {'met' if ratio >= 0.9 else 'NOT met'}")


if __name__ == "__main__":
    main()
