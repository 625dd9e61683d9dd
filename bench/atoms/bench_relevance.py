"""Relevance benchmark on a real documentation corpus: our search modes vs BM25 (bm25s), same run.

Corpus: the PostgreSQL 15 HTML documentation from the Debian package `postgresql-doc-15`
(/usr/share/doc/postgresql-doc-15/html). Each page is split at its section headings (h1-h4
class="title"); a section's text is its heading + body (navigation and tables of contents left out).
A deterministic sample of sections (default 300, body >= 100 characters) is ingested through the
normal bulk path (`atoms.bulk.atom_ingest_texts`, modality "document") and embedded with
`atoms.services.embed_atoms` (all-MiniLM-L6-v2).

Known-item queries: for a sample of the sections, query = the section heading followed by its page
title (section numbers stripped; never text from the body), relevant = that section (sections whose
query is not unique are not used as queries). Measured, all on the same corpus and queries:
recall@10 (the section in the top 10) and MRR@10 of

* BM25 alone: bm25s (k1 1.5, b 0.75, English stop words, Snowball English stemmer via PyStemmer),
* dense alone: `atom_search` with weights {"vector": 1},
* full text alone (weights {"fulltext": 1}) and trigram alone (weights {"trigram": 1}),
* our hybrid with the default weights, and a few other weightings,
* a reference fusion outside the product: RRF (k=60) of the BM25 list and our dense list,
* our hybrid with weights chosen on a **disjoint dev query set** (`--dev-queries`, other sections of
  the same corpus): each dev query's three ranked lists are computed once by the product's own
  `_ranked_lists`/`_rerank_vector`, fused by the product's `fuse` under every weighting of a grid
  (each weight in 0, 0.5, 1, 1.5, 2), and the weighting with the best dev recall@10 (then MRR) is run
  on the test queries through `atom_search` like every other mode. Test queries never choose weights.

The query embedding is computed once per query (MiniLM, the same provider) and passed to every mode.

With `--pages` the corpus is instead every HTML page ingested through the product's own path
(`atoms.services.atom_ingest`: the HTML extractor drops navigation, the chunker cuts ~200-token chunks
that start with their section path), 11K+ chunk atoms; a query's relevant atoms are the chunks of its
page whose heading path ends with its section's heading (a hit = any of them in the top 10), and
BM25 indexes the same chunk texts. Its own database, `bench_atoms_relevance_pages`.

    .venv/bin/python bench/atoms/bench_relevance.py             # 300 sections, 200 queries
    .venv/bin/python bench/atoms/bench_relevance.py --sections 3000 --queries 300           # whole docs
    .venv/bin/python bench/atoms/bench_relevance.py --pages --queries 300 [--reuse]         # normal ingest path
    .venv/bin/python bench/atoms/bench_relevance.py --quick     # 30 sections, 20 queries

Needs `apt-get install postgresql-doc-15` and `pip install bm25s PyStemmer` (dev dependencies).
Writes only to its own database `bench_atoms_relevance` (dropped and recreated) and Redis db 9 (its Celery keys deleted).
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import time
import traceback
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup  # noqa: E402

DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
K = 10
ADMONITIONS = {"Note", "Tip", "Warning", "Caution", "Important"}
SKIP_DIV_CLASSES = {"navheader", "navfooter", "toc", "titlepage-nav"}
NUMBER = re.compile(r"^\s*(?:[A-Z]\.)?[\d.]+\s+|^\s*(?:Chapter|Part|Appendix)\s+[\dA-Z.]+\.?\s+", re.I)
WEIGHTINGS = {
    "hybrid (product default: vector 1, fulltext 1, trigram 1.5)": None,
    "vector 1 + fulltext 1 + trigram 0.5 (default before 2026-12-04)": {"vector": 1, "fulltext": 1, "trigram": 0.5},
    "vector 1 + fulltext 1 (no trigram)": {"vector": 1, "fulltext": 1, "trigram": 0},
    "vector 1 + fulltext 1 + trigram 1": {"vector": 1, "fulltext": 1, "trigram": 1},
    "vector 1 + fulltext 0.5": {"vector": 1, "fulltext": 0.5, "trigram": 0},
    "vector 0.5 + fulltext 1": {"vector": 0.5, "fulltext": 1, "trigram": 0},
    "vector 1 + trigram 1": {"vector": 1, "fulltext": 0, "trigram": 1},
}
SINGLE = {
    "dense alone (vector 1)": {"vector": 1, "fulltext": 0, "trigram": 0},
    "full text alone (fulltext 1)": {"vector": 0, "fulltext": 1, "trigram": 0},
    "trigram alone (trigram 1)": {"vector": 0, "fulltext": 0, "trigram": 1},
}


class SectionParser(HTMLParser):
    """Splits one DocBook HTML page into (heading, body) sections; the <title> is the page title."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title, self.sections = "", []
        self._in_title = self._in_heading = False
        self._skip_depth = 0  # > 0 while inside a skipped div (counts nested divs)
        self._heading, self._body = "", []

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag == "div":
            if self._skip_depth:
                self._skip_depth += 1
            elif set(cls.split()) & SKIP_DIV_CLASSES:
                self._skip_depth = 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("h1", "h2", "h3", "h4") and "title" in cls.split() and not self._skip_depth:
            self._flush()
            self._in_heading = True

    def handle_endtag(self, tag):
        if tag == "div" and self._skip_depth:
            self._skip_depth -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in ("h1", "h2", "h3", "h4") and self._in_heading:
            self._in_heading = False
            if self._heading.strip() in ADMONITIONS and self.sections:  # a Note/Tip box, not a section
                word = self._heading.strip()
                self._heading, body = self.sections.pop()
                self._body = [body, word]

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif self._skip_depth:
            return
        elif self._in_heading:
            self._heading += data
        elif self._heading:
            self._body.append(data)

    def _flush(self):
        if self._heading:
            self.sections.append((" ".join(self._heading.split()), " ".join(" ".join(self._body).split())))
        self._heading, self._body = "", []

    def close(self):
        super().close()
        self._flush()


def strip_number(heading: str) -> str:
    return NUMBER.sub("", heading).strip()


def load_sections(min_body: int = 100) -> list[dict]:
    """Every section of the documentation: heading, page title, text (heading + body), query."""
    out = []
    for path in sorted(DOCS.glob("*.html")):
        p = SectionParser()
        p.feed(path.read_text(encoding="utf-8", errors="replace"))
        p.close()
        title = strip_number(" ".join(p.title.split()))
        for heading, body in p.sections:
            if len(body) < min_body or heading in ADMONITIONS:
                continue
            h = strip_number(heading)
            query = h if h.lower() == title.lower() else f"{h} {title}"
            out.append({"page": path.name, "heading": heading, "title": title, "query": query,
                        "text": f"{heading}\n{body}"})
    return out


# ------------------------------------------------------------------ metrics
def score(ranked: list[int], relevant: set[int]) -> tuple[float, float]:
    """(hit@10, reciprocal rank@10 of the first relevant item) for one known-item query."""
    for rank, item in enumerate(ranked[:K], start=1):
        if item in relevant:
            return 1.0, 1.0 / rank
    return 0.0, 0.0


def rrf(lists: list[list[int]], k: int = 60) -> list[int]:
    fused: dict[int, float] = {}
    for ranked in lists:
        for rank, item in enumerate(ranked, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return [i for i, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]


GRID = (0.0, 0.5, 1.0, 1.5, 2.0)


def _weights_label(w: dict) -> str:
    return "(" + ", ".join(f"{k} {v:g}" for k, v in w.items()) + ")"


def _default_weights() -> dict:
    from atoms.search import DEFAULT_WEIGHTS

    return {k: float(v) for k, v in DEFAULT_WEIGHTS.items()}


def tune_weights(queries: list[str], relevant: list[set[int]], provider) -> tuple[dict, list]:
    """Best RRF weights on the dev queries: each query's ranked lists once (the product's own
    functions), then the product's `fuse` under every weighting of GRID³. Returns (best weights,
    [(weights, recall@10, MRR@10)] best first)."""
    from atoms.search import SearchQuery, _ranked_lists, _rerank_vector

    per_query = []
    for q, v in zip(queries, provider.embed_texts(queries), strict=True):
        sq = SearchQuery(text=q, vector=v, k=K, weights={"vector": 1, "fulltext": 1, "trigram": 1})
        lists = _ranked_lists(sq, v, provider.name)
        _rerank_vector(lists, v, provider.name)
        per_query.append(lists)
    rows = []
    for wv in GRID:
        for wf in GRID:
            for wt in GRID:
                weights = {"vector": wv, "fulltext": wf, "trigram": wt}
                if not any(weights.values()):
                    continue
                s = np.array([score(_fused_top(lists, weights), rel)
                              for lists, rel in zip(per_query, relevant, strict=True)])
                rows.append((weights, float(s[:, 0].mean()), float(s[:, 1].mean())))
    default = _default_weights()  # ties go to the weighting nearest the product's default
    rows.sort(key=lambda r: (-r[1], -r[2], sum(abs(r[0][k] - default.get(k, 0)) for k in r[0])))
    return rows[0][0], rows


def _fused_top(lists: dict, weights: dict) -> list[int]:
    from atoms.search import fuse

    fused = fuse({name: hits for name, hits in lists.items() if weights.get(name, 0) > 0}, weights)  # as the product
    return [i for i, _ in sorted(fused.items(), key=lambda item: (-item[1]["score"], item[0]))[:K]]


@dataclass
class Corpus:
    """What one run searches: the documents (atom ids and texts, in BM25 order) and the known-item
    test and dev queries with their relevant atom ids (any of them in the top 10 is a hit)."""
    description: str
    ids: list[int]
    texts: list[str]
    queries: list[str]
    relevant: list[set[int]]
    dev_queries: list[str]
    dev_relevant: list[set[int]]
    examples: list[str]
    ingest_s: float = 0.0
    embed_s: float = 0.0
    embedded: int = 0


def split_queries(sections: list[dict], rng: random.Random, n_test: int, n_dev: int) -> tuple[list[int], list[int]]:
    """Indexes of test and disjoint dev sections, among those whose query is unique."""
    counts: dict[str, int] = {}
    for s in sections:
        counts[s["query"].lower()] = counts.get(s["query"].lower(), 0) + 1
    candidates = [i for i, s in enumerate(sections) if counts[s["query"].lower()] == 1]
    test = sorted(rng.sample(candidates, min(n_test, len(candidates))))
    rest = sorted(set(candidates) - set(test))
    return test, sorted(rng.sample(rest, min(n_dev, len(rest))))


def _embed(ids: list[int]) -> tuple[float, int]:
    from atoms.services import embed_atoms

    t0 = time.perf_counter()
    done = embed_atoms(atom_ids=ids)
    return time.perf_counter() - t0, done


def sections_corpus(tenant, everything: list[dict], args, rng: random.Random) -> Corpus:
    """The bench's own section split of the HTML, each section one atom (`atom_ingest_texts`)."""
    from atoms.bulk import atom_ingest_texts
    from atoms.models import Atom

    corpus, seen = [], set()
    for s in rng.sample(everything, min(args.sections, len(everything))):  # identical texts: keep the first
        sha = hashlib.sha256(s["text"].encode()).hexdigest()
        if sha not in seen:
            seen.add(sha)
            corpus.append(s)
    test, dev = split_queries(corpus, rng, args.queries, args.dev_queries or args.queries)
    t0 = time.perf_counter()
    atom_ingest_texts(tenant=tenant, texts=[s["text"] for s in corpus], modality="document",
                      source_uri="bench://postgresql-doc-15", defer_text_index=False)
    sha_to_id = dict(Atom.objects.values_list("sha256", "id"))
    ids = [sha_to_id[hashlib.sha256(s["text"].encode()).hexdigest()] for s in corpus]
    ingest_s = time.perf_counter() - t0
    embed_s, embedded = _embed(ids)
    return Corpus(f"{len(corpus):,} sections sampled (seed {args.seed}) of {len(everything):,}, one atom each",
                  ids, [s["text"] for s in corpus], [corpus[i]["query"] for i in test], [{ids[i]} for i in test],
                  [corpus[i]["query"] for i in dev], [{ids[i]} for i in dev],
                  [f"{corpus[i]['query']!r} → {corpus[i]['heading']!r} ({corpus[i]['page']})" for i in test[:5]],
                  ingest_s, embed_s, embedded)


def pages_corpus(tenant, everything: list[dict], args, rng: random.Random) -> Corpus:
    """Every HTML page through the product's own path (`atom_ingest`: the HTML extractor and the
    chunker, as `manage.py ingest` does); a query's relevant atoms are the chunks of its page whose
    heading path ends with its section's heading."""
    from atoms.extract import Source
    from atoms.models import AtomRelation
    from atoms.services import atom_ingest

    t0 = time.perf_counter()
    pages = sorted(DOCS.glob("*.html"))
    if args.max_pages and args.max_pages < len(pages):  # long chunks embed at ~5/s on 2 vCPUs
        pages = sorted(rng.sample(pages, args.max_pages))
        everything = [s for s in everything if s["page"] in {p.name for p in pages}]
    roots = {path.name: atom_ingest(tenant=tenant, source=Source.from_path(path), source_kind="file",
                                    source_uri=str(path)).root.pk for path in pages}
    edges = AtomRelation.objects.filter(relation="PART_OF", target_id__in=roots.values())
    chunks = list(edges.values_list("source_id", "target_id", "source__text", "source__metadata__heading_path"))
    ingest_s = time.perf_counter() - t0
    by_section: dict[tuple[int, str], set[int]] = {}
    for atom_id, root, _, path in chunks:
        if path:
            by_section.setdefault((root, path[-1]), set()).add(atom_id)
    found = [s for s in everything if (roots[s["page"]], s["heading"]) in by_section]
    test, dev = split_queries(found, rng, args.queries, args.dev_queries or args.queries)
    rel = [by_section[(roots[s["page"]], s["heading"])] for s in found]
    embed_s, embedded = _embed([c[0] for c in chunks])
    return Corpus(f"{len(pages):,} pages (seed {args.seed}) ingested by the HTML extractor: {len(chunks):,} chunk atoms; "
                  f"{len(found):,} of their {len(everything):,} sections found by heading path",
                  [c[0] for c in chunks], [c[2] or "" for c in chunks],
                  [found[i]["query"] for i in test], [rel[i] for i in test],
                  [found[i]["query"] for i in dev], [rel[i] for i in dev],
                  [f"{found[i]['query']!r} → {found[i]['heading']!r} ({found[i]['page']}, "
                   f"{len(rel[i])} chunk(s))" for i in test[:5]], ingest_s, embed_s, embedded)


def run_modes(corpus: Corpus, provider, tuned_name: str, tuned: dict) -> tuple[dict, dict]:
    """Ranked atom ids per mode for the test queries (BM25, ours, the reference fusion), and ms/query."""
    import bm25s
    import Stemmer

    from atoms.search import SearchQuery, atom_search

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75)
    retriever.index(bm25s.tokenize(corpus.texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    qvecs = provider.embed_texts(corpus.queries)  # (Q, 384) float32, once for every mode
    results: dict[str, list[list[int]]] = {}
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    docs, _ = retriever.retrieve(bm25s.tokenize(corpus.queries, stopwords="en", stemmer=stemmer,
                                                show_progress=False), k=min(40, len(corpus.ids)), show_progress=False)
    timing["BM25 alone (bm25s)"] = (time.perf_counter() - t0) / len(corpus.queries)
    results["BM25 alone (bm25s)"] = [[corpus.ids[j] for j in row] for row in np.asarray(docs)]
    for name, weights in {**SINGLE, **WEIGHTINGS, tuned_name: tuned}.items():
        ranked, t0 = [], time.perf_counter()
        try:
            for q, v in zip(corpus.queries, qvecs, strict=True):
                sq = SearchQuery(text=q, vector=v, k=K if name not in SINGLE else 40)
                if weights is not None:
                    sq.weights = dict(weights)
                ranked.append([h.atom.pk for h in atom_search(sq)])
        except Exception:  # noqa: BLE001 - report the mode as failed, keep the others
            traceback.print_exc()
            continue
        timing[name] = (time.perf_counter() - t0) / len(corpus.queries)
        results[name] = ranked
        hits = sum(score(r, rel)[0] for r, rel in zip(ranked, corpus.relevant, strict=True))
        print(f"  {name}: recall@10 {hits / len(ranked):.3f} ({timing[name] * 1000:.1f} ms/query)", flush=True)
    if "dense alone (vector 1)" in results:
        name = "reference: RRF(BM25, dense), outside the product"
        results[name] = [rrf([b[:40], d[:40]]) for b, d in
                         zip(results["BM25 alone (bm25s)"], results["dense alone (vector 1)"], strict=True)]
        timing[name] = float("nan")
    return results, timing


def report(corpus: Corpus, results: dict, timing: dict, dev_table: list, tuned_name: str, t_tune: float) -> None:
    table = {}
    for name, ranked in results.items():
        s = np.array([score(r, rel) for r, rel in zip(ranked, corpus.relevant, strict=True)])
        table[name] = (s[:, 0].mean(), s[:, 1].mean())
    best_peer = max(table["BM25 alone (bm25s)"][0], table.get("dense alone (vector 1)", (0.0, 0.0))[0])
    bm25_r = table["BM25 alone (bm25s)"][0]
    rows = [[name, f"{rec:.3f}", f"{mrr:.3f}", f"{rec / bm25_r:.2f}" if bm25_r else "-",
             f"{(rec - best_peer) * 100:+.1f}", "-" if timing[name] != timing[name] else f"{timing[name] * 1000:.1f}"]
            for name, (rec, mrr) in table.items()]
    hybrid = table.get(next(iter(WEIGHTINGS)), (float("nan"), 0.0))[0]
    print(f"\nMachine: {_setup.machine()}")
    print(f"Corpus: PostgreSQL 15 documentation (Debian postgresql-doc-15), {corpus.description}; "
          f"{len(corpus.queries):,} known-item test queries (heading + page title), {len(corpus.dev_queries):,} "
          f"disjoint dev queries. Ingest {corpus.ingest_s:.1f} s; MiniLM embedding of {corpus.embedded:,} atoms "
          f"{corpus.embed_s:.1f} s (query embedding not in the ms/query column).\n")
    print(_setup.table(["mode", "recall@10", "MRR@10", "recall ÷ BM25", "recall points vs best of BM25/dense",
                        "ms/query"], rows))
    verdict = "met" if hybrid >= best_peer + 0.05 else "MISSED"
    print(f"\nAim: hybrid recall@10 >= best of BM25/dense + 5 points ({best_peer + 0.05:.3f}): {hybrid:.3f} → {verdict}")
    print(f"\nDev tuning: {len(corpus.dev_queries)} queries on other sections of the same corpus, {t_tune:.0f} s; "
          "best weightings by dev recall@10 (MRR):")
    for weights, rec, mrr in dev_table[:5]:
        print(f"  {_weights_label(weights)}: {rec:.3f} ({mrr:.3f})")
    default_dev = next((r for r in dev_table if r[0] == _default_weights()), None)
    if default_dev:
        print(f"  default {_weights_label(default_dev[0])}: {default_dev[1]:.3f} ({default_dev[2]:.3f})")
    tuned_r = table.get(tuned_name, (float("nan"), 0.0))[0]
    print(f"Tuned on dev, measured on test: {tuned_r:.3f} → "
          f"{'met' if tuned_r >= best_peer + 0.05 else 'MISSED'} ({(tuned_r - best_peer) * 100:+.1f} points)")
    print("\nExamples (query → relevant heading):")
    for line in corpus.examples:
        print(f"  {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 sections, 20 queries (embedding dominates)")
    ap.add_argument("--sections", type=int, default=None, help="corpus size in sections (default 300)")
    ap.add_argument("--queries", type=int, default=None, help="known-item queries (default 200)")
    ap.add_argument("--dev-queries", type=int, default=None, help="dev queries for weight tuning (default = --queries)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--pages", action="store_true",
                    help="ingest every HTML page through the product's extractor and chunker instead of the bench's sections")
    ap.add_argument("--max-pages", type=int, default=None, help="with --pages: a seeded sample of this many pages")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the bench database of an earlier run (same corpus): ingest dedups, embeddings are not redone")
    args = ap.parse_args()
    args.sections = args.sections or (30 if args.quick else 300)
    args.queries = args.queries or (20 if args.quick else 200)
    if not DOCS.is_dir():
        print(f"{DOCS} not found: apt-get install -y postgresql-doc-15")
        return 2
    everything = load_sections()
    print(f"corpus: {len(everything):,} sections in {len(set(s['page'] for s in everything)):,} pages", flush=True)
    env = _setup.bench_env("bench_atoms_relevance_pages" if args.pages else "bench_atoms_relevance",
                           recreate=not args.reuse)
    _setup.prepare(env)
    tenant = _setup.django_init(env)
    from atoms.embedding import text_provider

    build = pages_corpus if args.pages else sections_corpus
    corpus = build(tenant, everything, args, random.Random(args.seed))
    print(f"{corpus.description}; ingest {corpus.ingest_s:.1f} s, embedded {corpus.embedded:,} in "
          f"{corpus.embed_s:.1f} s; {len(corpus.queries)} test / {len(corpus.dev_queries)} dev queries", flush=True)
    provider = text_provider()
    t0 = time.perf_counter()
    tuned, dev_table = tune_weights(corpus.dev_queries, corpus.dev_relevant, provider)
    t_tune = time.perf_counter() - t0
    print(f"dev tuning ({len(corpus.dev_queries)} queries, {t_tune:.0f} s): best {tuned} recall@10 "
          f"{dev_table[0][1]:.3f} MRR {dev_table[0][2]:.3f}", flush=True)
    tuned_name = "hybrid, weights tuned on the dev queries " + _weights_label(tuned)
    results, timing = run_modes(corpus, provider, tuned_name, tuned)
    _setup.flush_redis(env)
    report(corpus, results, timing, dev_table, tuned_name, t_tune)
    return 0


if __name__ == "__main__":
    sys.exit(main())
