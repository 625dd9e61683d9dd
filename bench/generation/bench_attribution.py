"""Attribution faithfulness of the AtomicStream (issue #7): does the atom a token is credited to matter?

For each prompt (the first 40 tokens of an awscli documentation section; the corpus, that section
included, is the tenant's atom store), generate greedily with k retrieved atoms through the real service
(`generation_start`, which records per-token attributions). Then take the run's top-attributed atom and
the tokens credited to it (steps whose top source it is) and teacher-force the same generated tokens
with that atom removed from the context, and again with a random *other* retrieved atom removed instead.
The drop in log-likelihood of the credited tokens, top removed vs random removed, pooled over runs:
aim >= 3x. Removing k atoms (top-2 vs random-2) is reported too.

    .venv/bin/python bench/generation/bench_attribution.py [--quick]
"""
from __future__ import annotations

import argparse
import random
import time

import _world
import numpy as np


def token_logprobs(loaded, sources, prompt: str, budget: int, generated: list[int]) -> np.ndarray:
    from inference.runtime.context import build_context

    ctx = build_context(loaded.tokenizer, sources, prompt=prompt, budget=budget)
    tokens = ctx.tokens + generated[:-1]
    res = loaded.llama.forward(tokens, loaded.llama.new_cache(), all_positions=True)
    rows = res.logits[len(ctx.tokens) - 1:].astype(np.float64)
    rows -= rows.max(axis=1, keepdims=True)
    lp = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
    return lp[np.arange(len(generated)), generated]


def one_run(world, loaded, prompt: str, k: int, max_tokens: int, rng: random.Random):
    from atoms.models import Atom
    from inference.generation import GenerationSpec, generation_start
    from inference.runtime.context import Source
    from provenance.models import GenerationSource

    stream = generation_start(tenant=world.tenant, spec=GenerationSpec(
        model=world.model, prompt=prompt, k=k, sampling={"max_tokens": max_tokens}))
    steps = [e for e in stream if e["type"] == "token"]
    srcs = list(GenerationSource.objects.filter(run=stream.run).order_by("rank"))
    if len(srcs) < 3 or len(steps) < 4:
        return None
    text = dict(Atom.objects.filter(pk__in=[s.atom_id for s in srcs]).values_list("id", "text"))
    sources = [Source(s.atom_id, text[s.atom_id]) for s in srcs]
    ranked = sorted(srcs, key=lambda s: -s.mass_total)
    top = ranked[0].atom_id
    credited = [e["position"] for e in steps if e["attributions"] and e["attributions"][0]["atom"] == top]
    if not credited:
        return None
    gen = [e["token"] for e in steps]
    budget = stream.run.params["context_budget"]
    base = token_logprobs(loaded, sources, prompt, budget, gen)

    def drop(removed: set[int]) -> float:
        kept = [s for s in sources if s.atom_id not in removed]
        lp = token_logprobs(loaded, kept, prompt, budget, gen)
        return float(np.sum(base[credited] - lp[credited]))

    others = [s.atom_id for s in srcs if s.atom_id != top]
    top2 = {ranked[0].atom_id, ranked[1].atom_id}
    rand2 = set(rng.sample([s.atom_id for s in srcs if s.atom_id not in top2], 2)) if len(srcs) >= 4 else None
    return {"credited": len(credited), "top": drop({top}), "random": drop({rng.choice(others)}),
            "top2": drop(top2), "random2": drop(rand2) if rand2 else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    n_prompts = 10 if args.quick else 40
    services = _world._corpus.QUICK_SERVICES if args.quick else _world._corpus.FULL_SERVICES
    world = _world.build("bench_generation_attr", services=services, max_sections=300 if args.quick else 1500)
    from inference.atom_source import load_runtime

    loaded = load_runtime(world.model, n_ctx=2048)
    rng = random.Random(7)
    picks = rng.sample(world.sections, min(n_prompts, len(world.sections)))
    results, t0 = [], time.perf_counter()
    for sec in picks:
        prompt = loaded.tokenizer.decode(list(sec.ids[:40]))
        r = one_run(world, loaded, prompt, args.k, args.max_tokens, rng)
        if r:
            results.append(r)
            print(f"  run {len(results)}: {r['credited']} credited tokens, LL drop top {r['top']:.2f} vs random "
                  f"{r['random']:.2f} nats", flush=True)
    _world.flush_redis(world.env)
    report(results, len(picks), args, time.perf_counter() - t0)


def report(results: list[dict], n: int, args, seconds: float) -> None:
    top = sum(r["top"] for r in results)
    rnd = sum(r["random"] for r in results)
    pairs = [r for r in results if r["random2"] is not None]
    top2, rnd2 = sum(r["top2"] for r in pairs), sum(r["random2"] for r in pairs)
    credited = sum(r["credited"] for r in results)
    wins = sum(r["top"] > r["random"] for r in results)
    print(f"\nMachine: {_world.machine()}; k={args.k}, {args.max_tokens} tokens greedy per prompt; "
          f"{len(results)}/{n} runs with a credited top source, {credited} credited tokens ({seconds:.0f} s)")
    print(_world.table(
        ["removed from the context", "LL drop of the credited tokens (nats, pooled)", "per credited token",
         "ratio top ÷ random"],
        [["top-attributed atom", f"{top:.1f}", f"{top / max(credited, 1):.3f}", f"**{top / rnd:.1f}×**" if rnd > 0 else "∞"],
         ["a random other retrieved atom", f"{rnd:.1f}", f"{rnd / max(credited, 1):.3f}", "1.0×"],
         ["top-2 attributed atoms", f"{top2:.1f}", "", f"{top2 / rnd2:.1f}×" if rnd2 > 0 else "∞"],
         ["2 random retrieved atoms (not the top 2)", f"{rnd2:.1f}", "", "1.0×"]]))
    print(f"runs where removing the top atom hurt more than removing a random one: {wins}/{len(results)}")
    ok = rnd > 0 and top / rnd >= 3
    print(f"aim (>= 3x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
