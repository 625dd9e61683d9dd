"""Dev-split sweeps for bench_perplexity.py: retrieval settings, refresh stride and kNN-LM settings are
chosen here on DEV sections only (disjoint from the test sections, same split function and seed), so the
test figures of bench_perplexity.py are never looked at while tuning.

Every forward (context + section) is cached on disk (target NLL + kNN neighbours of each scored position),
so a sweep costs one forward per distinct context; the kNN-LM grid then costs no forward at all.

    .venv/bin/python bench/generation/tune_perplexity.py retrieval --refresh-for ""   # fusion weights, query
    .venv/bin/python bench/generation/tune_perplexity.py knn --strides 256            # λ / T / k / adaptive λ

Its own database `bench_generation_dev` is kept between sweeps (re-made when it does not hold the corpus).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "atoms"))
import _corpus  # noqa: E402
import _setup  # noqa: E402
import bench_perplexity as bp  # noqa: E402

KMAX = 128


class Forwards:
    """(NLL of the scored tokens, kNN neighbour ids + scores) of one section after one context, cached."""

    def __init__(self, llama, ds, cache_dir: Path):
        self.llama, self.ds, self.dir, self.memo, self.n_new = llama, ds, cache_dir, {}, 0
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, ctx: list[int], s) -> dict:
        ids, end = list(s.ids), min(len(s.ids), bp.PREFIX + bp.SCORED)
        key = hashlib.sha1(np.asarray(ctx + ids[:end], np.int32).tobytes()).hexdigest()
        if key in self.memo:
            return self.memo[key]
        path = self.dir / f"{key}.npz"
        if path.exists():
            z = np.load(path)
            out = {k: z[k] for k in z.files}
        else:
            from inference.runtime import knnlm

            nll, _, hidden = bp.score(self.llama, ctx, ids, bp.PREFIX, end)
            q = knnlm.context_keys(hidden, self.ds.norm_weight, self.ds.eps)
            idx, sc = knnlm.neighbours(self.ds, q, KMAX, exclude_group=s.index)
            out = {"nll": nll.astype(np.float32), "val": self.ds.values[idx].astype(np.int32),
                   "sc": sc.astype(np.float32)}
            np.savez(path, **out)
            self.n_new += 1
        self.memo[key] = out
        return out


def knn_p(f: dict, targets: np.ndarray, k: int, temp: float) -> np.ndarray:
    sc = f["sc"][:, :k].astype(np.float64) / temp
    w = np.exp(sc - sc.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return (w * (f["val"][:, :k] == targets[:, None])).sum(axis=1)


def mix(f: dict, targets, lam, k, temp, adaptive=None) -> np.ndarray:
    """NLL of (1 - λ) p_LM + λ p_kNN; `adaptive` = (θ, width): λ_t = λ · sigmoid((s1 - θ) / width)."""
    if lam == 0:
        return f["nll"]
    lam_t = np.full(len(targets), lam)
    if adaptive is not None:
        theta, width = adaptive
        lam_t = lam / (1.0 + np.exp(-(f["sc"][:, 0] - theta) / width))
    p = (1 - lam_t) * np.exp(-f["nll"].astype(np.float64)) + lam_t * knn_p(f, targets, k, temp)
    return -np.log(np.maximum(p, 1e-300))


def world(n_test: int, n_dev: int, budget: int, seed: int):
    from inference.runtime import default_home

    llama, tok, mp = bp.load_model(n_ctx=budget + bp.PREFIX + bp.SCORED)
    sections = _corpus.sections(tok, _corpus.rst_files(_corpus.wheel_path(default_home()), bp.SERVICES))
    test, dev = bp.split(sections, n_test, n_dev, seed)
    assert not {s.index for s in test} & {s.index for s in dev}
    env = _setup.bench_env("bench_generation_dev", recreate=False)
    reuse = _ready(env, len(sections))
    if not reuse:
        env = _setup.bench_env("bench_generation_dev")
        _setup.prepare(env)
    tenant = _setup.django_init(env)
    if reuse:
        from atoms.models import Atom

        by_sha = dict(Atom.objects.values_list("sha256", "id"))
        atom_ids = [by_sha[hashlib.sha256(s.text.encode()).hexdigest()] for s in sections]
    else:
        atom_ids, t = bp.ingest(tenant, sections)
        print(f"ingest {t:.0f} s", flush=True)
    print(f"{len(sections)} sections, dev {[s.index for s in dev]}", flush=True)
    ds, _, _ = bp.build_datastore(llama, mp, sections)
    retr = bp.Retrievers(sections, atom_ids, seed)
    fw = Forwards(llama, ds, default_home() / "cache" / "ppl-forwards")
    return llama, tok, sections, dev, retr, fw, env


def _ready(env, n: int) -> bool:
    """The dev database already holds the n embedded sections (it is kept between sweeps)."""
    try:
        conn = _setup.psycopg_connect(env)
        with conn:
            row = conn.execute("SELECT count(*), (SELECT count(*) FROM atoms_atomembedding) FROM atoms_atom").fetchone()
        return row == (n, n)
    except Exception:  # noqa: BLE001 - no database or schema yet
        return False


def ppl(nlls) -> float:
    return float(np.exp(np.concatenate(nlls).mean()))


def blocks(tok, sections, s, fw, retrieve, budget, stride, qlen):
    """Per scored block [start, start+stride): the forward after the context retrieved at `start`."""
    end = min(len(s.ids), bp.PREFIX + bp.SCORED)
    out = []
    for start in range(bp.PREFIX, end, stride):
        query = tok.decode(s.ids[max(0, start - qlen):start])
        ctx = bp.context_tokens(tok, sections, retrieve(s.index, query), budget)
        out.append((fw.get(ctx, s), start - bp.PREFIX, min(start + stride, end) - bp.PREFIX))
    return out


def nll_of(bl, targets, lam=0.0, k=32, temp=0.01, adaptive=None) -> np.ndarray:
    return np.concatenate([mix({n: v[a:b] for n, v in f.items()}, targets[a:b], lam, k, temp, adaptive)
                           for f, a, b in bl])


def targets_of(s) -> np.ndarray:
    return np.asarray(s.ids[bp.PREFIX:min(len(s.ids), bp.PREFIX + bp.SCORED)])


def retriever(retr, weights=None, oversample=4, cands=bp.CANDIDATES):
    from atoms.search import DEFAULT_WEIGHTS, SearchQuery, atom_search
    from atoms.selectors import AtomFilters

    w = dict(weights or DEFAULT_WEIGHTS)

    def fn(held_out, query):
        hits = atom_search(SearchQuery(text=query, k=cands, weights=w, oversample=oversample,
                                       filters=AtomFilters(exclude_ids=[retr.atom_ids[held_out]])))
        found = [retr.section_of.get(h.atom.pk) for h in hits]
        return [i for i in found if i is not None and i != held_out][:cands]
    return fn


def sweep_retrieval(args, tok, sections, dev, retr, fw):
    configs = {"bm25": (retr.bm25_search, {}), "ours-default": (retriever(retr), {}),
               "ours-depth8": (retriever(retr, oversample=1), {})}
    for name, w in {"fts": {"fulltext": 1}, "vec": {"vector": 1}, "tri": {"trigram": 1},
                    "vec+fts": {"vector": 1, "fulltext": 1}, "fts2+vec": {"vector": 1, "fulltext": 2, "trigram": 0.5},
                    "vec2+fts": {"vector": 2, "fulltext": 1, "trigram": 0.5},
                    "fts+tri": {"fulltext": 1, "trigram": 1}}.items():
        configs[name] = (retriever(retr, w), {})
    configs = {n: c for n, c in configs.items() if n in args.configs.split(",")}
    for name, (fn, _) in configs.items():
        for stride, qlen in ((bp.SCORED, 64), (bp.SCORED, 32), (64, 64), (32, 32), (16, 64)):
            if (stride < bp.SCORED and name not in args.refresh_for.split(",")) or qlen not in args.qlens:
                continue
            t0 = time.perf_counter()
            nlls = [nll_of(blocks(tok, sections, s, fw, fn, args.budget, stride, qlen), targets_of(s)) for s in dev]
            print(f"{name:14s} stride {stride:3d} q {qlen:3d}: dev ppl {ppl(nlls):.3f} "
                  f"({fw.n_new} new forwards, {time.perf_counter() - t0:.0f} s)", flush=True)


def sweep_knn(args, tok, sections, dev, retr, fw):
    named = {"none": lambda h, q: [], "bm25": retr.bm25_search, "ours": retriever(retr),
             "vec": retriever(retr, {"vector": 1}), "fts": retriever(retr, {"fulltext": 1})}
    for name in args.knn_for.split(","):
        fn = named[name]
        for stride, qlen in ((bp.SCORED, 64), (64, 64), (32, 32), (16, 64)):
            if stride not in args.strides:
                continue
            bls = [(blocks(tok, sections, s, fw, fn, args.budget, stride, qlen), targets_of(s)) for s in dev]
            base = ppl([nll_of(b, y) for b, y in bls])
            best = []
            for lam, k, temp in itertools.product(args.lams, args.ks, args.temps):
                best.append((ppl([nll_of(b, y, lam, k, temp) for b, y in bls]), lam, k, temp, None))
            fixed = min(best)
            for lam, k, temp, th, wd in itertools.product(args.lams, args.ks, args.temps, args.thetas, args.widths):
                best.append((ppl([nll_of(b, y, lam, k, temp, (th, wd)) for b, y in bls]), lam, k, temp, (th, wd)))
            print(f"{name} stride {stride}: best fixed λ {fixed}", flush=True)
            best.sort(key=lambda r: r[0])
            print(f"{name} stride {stride}: no kNN {base:.3f}; best " +
                  "; ".join(f"{p:.3f} λ={lam} k={k} T={t} ad={ad}" for p, lam, k, t, ad in best[:6]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["retrieval", "knn"])
    ap.add_argument("--dev", type=int, default=24)
    ap.add_argument("--test", type=int, default=18)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--refresh-for", default="ours-default,bm25")
    ap.add_argument("--knn-for", default="none,bm25,ours")
    ap.add_argument("--strides", type=int, nargs="*", default=[bp.SCORED, 64])
    ap.add_argument("--qlens", type=int, nargs="*", default=[64])
    ap.add_argument("--configs", default="bm25,ours-default,fts,vec,vec+fts,fts2+vec,vec2+fts")
    ap.add_argument("--lams", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--ks", type=int, nargs="*", default=[8, 16, 32, 64])
    ap.add_argument("--temps", type=float, nargs="*", default=[0.002, 0.005, 0.01, 0.02])
    ap.add_argument("--thetas", type=float, nargs="*", default=[0.9, 0.93, 0.95, 0.97, 0.98])
    ap.add_argument("--widths", type=float, nargs="*", default=[0.005, 0.01, 0.02, 0.03])
    args = ap.parse_args()
    print(f"load average {_setup.load_average()}", flush=True)
    llama, tok, sections, dev, retr, fw, env = world(args.test, args.dev, args.budget, args.seed)
    try:
        (sweep_retrieval if args.what == "retrieval" else sweep_knn)(args, tok, sections, dev, retr, fw)
    finally:
        _setup.flush_redis(env)
    print(f"load average {_setup.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
