"""Concept discovery: per embedding model, k-means over the tenant's atom embeddings, matched across runs.

One run (`concepts_discover`) plans every model in memory first (k by silhouette on a sample, warm
start from the previous centroids, incremental assignment when little changed), then writes every
plan in ONE transaction. An exception or interruption before that commit leaves the previous
concepts untouched and marks the run failed.

Identity across runs: new centroids are matched to the previous live centroids with the Hungarian
algorithm (scipy.optimize.linear_sum_assignment) on euclidean distance; a pair within
`match_factor` x the smaller spread keeps the concept's identity. An unmatched new cluster is a
birth; an unmatched old concept whose surviving members mostly went to one cluster merged into it,
otherwise it died.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

import native
from atoms.embedding import TEXT_MODALITIES
from atoms.models import Atom, AtomEmbedding, AtomRelation, RelationType

from .models import Concept, ConceptEvent, DiscoveryRun

log = logging.getLogger(__name__)

SKIP_MODALITIES = ("concept",)
MEMBER_OF = RelationType.MEMBER_OF
JOB = "discover-concepts"


def _setting(name: str, default):
    return getattr(settings, name, default)


@dataclass
class DiscoveryConfig:
    k_min: int = 2
    k_max: int = field(default_factory=lambda: _setting("CONCEPTS_K_MAX", 20))
    sample_size: int = field(default_factory=lambda: _setting("CONCEPTS_SAMPLE_SIZE", 4000))
    min_atoms: int = field(default_factory=lambda: _setting("CONCEPTS_MIN_ATOMS", 10))
    incremental_max_change: float = field(default_factory=lambda: _setting("CONCEPTS_INCREMENTAL_MAX_CHANGE", 0.2))
    drift_ratio: float = field(default_factory=lambda: _setting("CONCEPTS_DRIFT_RATIO", 1.5))
    match_factor: float = field(default_factory=lambda: _setting("CONCEPTS_MATCH_FACTOR", 1.0))
    merge_share: float = 0.5
    max_iter: int = 100
    method: str = "lloyd"
    seed: int = 0
    force_full: bool = False
    models: list[str] | None = None  # restrict to these embedding models


# ----------------------------------------------------------------------------- the plan (pure, in memory)


@dataclass
class Prev:
    """The live concepts of one model before the run."""

    concepts: list[Concept]
    centroids: np.ndarray  # (M, D) float64
    membership: dict[int, int]  # member atom id -> index into concepts


@dataclass
class Plan:
    model: str
    mode: str  # full | incremental | unchanged | too_few | degenerate
    atom_ids: np.ndarray  # (N,) int64
    modalities: list[str]
    labels: np.ndarray | None = None  # (N,) cluster index per atom
    centroids: np.ndarray | None = None  # (K, D)
    distances: np.ndarray | None = None  # (N,) distance to own centroid
    cohesion: np.ndarray | None = None  # (K,)
    spread: np.ndarray | None = None  # (K,)
    matches: dict[int, int] = field(default_factory=dict)  # new cluster -> prev index
    merges: dict[int, int] = field(default_factory=dict)  # prev index -> new cluster
    deaths: list[int] = field(default_factory=list)  # prev indexes
    changed: np.ndarray | None = None  # (N,) bool: rows whose membership is (re)written
    silhouette: float | None = None
    inertia: float | None = None
    reason: str = ""
    prev: Prev | None = None

    def outcome(self) -> dict:
        return {"mode": self.mode, "atoms": int(len(self.atom_ids)), "reason": self.reason,
                "k": int(len(self.centroids)) if self.centroids is not None else 0,
                "silhouette": self.silhouette, "inertia": self.inertia,
                "reassigned": int(self.changed.sum()) if self.changed is not None else 0}


def embedding_models() -> list[str]:
    return sorted(AtomEmbedding.objects.exclude(atom__modality__in=SKIP_MODALITIES)
                  .filter(atom__deleted_at__isnull=True).values_list("model", flat=True).distinct())


def load_embeddings(model: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(atom ids (N,), vectors (N, D) float32, modalities) of the live, non-concept atoms of `model`."""
    rows = list(AtomEmbedding.objects.filter(model=model, atom__deleted_at__isnull=True)
                .exclude(atom__modality__in=SKIP_MODALITIES).order_by("atom_id")
                .values_list("atom_id", "vector", "atom__modality"))
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), []
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    dims = Counter(len(r[1]) for r in rows)
    dim = dims.most_common(1)[0][0]
    keep = [i for i, r in enumerate(rows) if len(r[1]) == dim]
    x = np.asarray([rows[i][1] for i in keep], dtype=np.float32).reshape(len(keep), dim)
    return ids[keep], x, [rows[i][2] for i in keep]


def previous_concepts(model: str) -> Prev | None:
    concepts = list(Concept.objects.filter(model=model, state__in=[Concept.State.BORN, Concept.State.ALIVE])
                    .order_by("id"))
    if not concepts:
        return None
    index = {c.atom_id: i for i, c in enumerate(concepts)}
    membership = {src: index[tgt] for src, tgt in AtomRelation.objects.filter(
        relation=MEMBER_OF, target_id__in=list(index)).values_list("source_id", "target_id")}
    centroids = np.asarray([np.asarray(c.centroid, dtype=np.float64) for c in concepts])
    return Prev(concepts, centroids, membership)


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    # x: (N, D), c: (K, D) -> (N, K) squared euclidean distances
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _assign(x: np.ndarray, c: np.ndarray, chunk: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and its distance for each row, in chunks. -> labels (N,), dist (N,)."""
    labels = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float64)
    c = c.astype(np.float32)
    for s in range(0, len(x), chunk):
        d = _sqdist(x[s:s + chunk], c)
        labels[s:s + chunk] = d.argmin(1)
        dist[s:s + chunk] = np.sqrt(d[np.arange(len(d)), labels[s:s + chunk]])
    return labels, dist


def _cluster_stats(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, dist: np.ndarray):
    """cohesion (mean cosine member·centroid) and spread (mean distance) per cluster."""
    k = len(centroids)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cn = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    cos = (xn * cn[labels].astype(np.float32)).sum(1)
    size = np.bincount(labels, minlength=k).astype(np.float64)
    safe = np.maximum(size, 1)
    return np.bincount(labels, cos, k) / safe, np.bincount(labels, dist, k) / safe


def _means(x: np.ndarray, labels: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Mean of each cluster's rows; an empty cluster keeps its old centroid."""
    k = len(old)
    sums = np.zeros((k, x.shape[1]), np.float64)
    np.add.at(sums, labels, x)
    size = np.bincount(labels, minlength=k)
    out = old.copy()
    out[size > 0] = sums[size > 0] / size[size > 0, None]
    return out


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _warm_init(prev: np.ndarray | None, sizes: np.ndarray | None, k: int, xs: np.ndarray) -> np.ndarray | None:
    """k initial centroids from the previous run: the k largest, or all of them plus the sample
    points farthest from them. None without a previous run (k-means++ then)."""
    if prev is None or len(prev) == 0:
        return None
    order = np.argsort(-sizes, kind="stable") if sizes is not None else np.arange(len(prev))
    if len(prev) >= k:
        return prev[order[:k]].copy()
    init = [c for c in prev]
    d = _sqdist(xs.astype(np.float64), np.asarray(init)).min(1)
    while len(init) < k:
        i = int(d.argmax())
        if d[i] <= 0:
            return None
        init.append(xs[i].astype(np.float64))
        d = np.minimum(d, _sqdist(xs[i:i + 1].astype(np.float64), xs.astype(np.float64)).ravel())
    return np.asarray(init)


def choose_k(xs: np.ndarray, cfg: DiscoveryConfig, prev: Prev | None) -> tuple[int, np.ndarray, float]:
    """k in [k_min, k_max] with the best mean silhouette of k-means on the sample xs (S, D).
    -> (k, centroids on the sample (k, D), silhouette)."""
    distinct = len(np.unique(xs, axis=0))
    k_hi = min(cfg.k_max, distinct, len(xs) // 2)
    best = None
    sizes = None if prev is None else np.asarray([c.size for c in prev.concepts], dtype=np.float64)
    for k in range(max(cfg.k_min, 2), k_hi + 1):
        init = _warm_init(prev.centroids if prev else None, sizes, k, xs)
        fit = native.kmeans(xs, k, seed=cfg.seed, max_iter=cfg.max_iter, init=init, method="lloyd")
        if len(np.unique(fit.labels)) < 2:
            continue
        score = native.silhouette(xs, fit.labels.astype(np.int64), sample_size=min(len(xs), 1000), seed=cfg.seed)
        if best is None or score > best[2] + 1e-9:
            best = (k, np.asarray(fit.centroids, np.float64), float(score))
    if best is None:
        return 1, xs.astype(np.float64).mean(0, keepdims=True), float("nan")
    return best


def _hungarian(new: np.ndarray, new_spread: np.ndarray, prev: Prev, prev_spread: np.ndarray,
               factor: float) -> dict[int, int]:
    from scipy.optimize import linear_sum_assignment

    cost = np.sqrt(_sqdist(new, prev.centroids))
    rows, cols = linear_sum_assignment(cost)
    out = {}
    for r, c in zip(rows, cols, strict=True):
        radius = factor * max(min(new_spread[r], prev_spread[c]), 1e-9)
        if cost[r, c] <= radius:
            out[int(r)] = int(c)
    return out


def _fates(plan: Plan, cfg: DiscoveryConfig) -> None:
    """Unmatched previous concepts: merged into the cluster that took most of their members, else dead."""
    prev = plan.prev
    matched_prev = set(plan.matches.values())
    where = {int(a): int(lab) for a, lab in zip(plan.atom_ids, plan.labels, strict=True)}
    by_prev: dict[int, Counter] = {}
    for atom_id, p in prev.membership.items():
        if p not in matched_prev and atom_id in where:
            by_prev.setdefault(p, Counter())[where[atom_id]] += 1
    dest: dict[int, int] = {}
    for p in range(len(prev.concepts)):
        if p in matched_prev:
            continue
        counts = by_prev.get(p)
        if counts:
            j, n = counts.most_common(1)[0]
            if n >= cfg.merge_share * sum(counts.values()):
                dest[p] = j
                continue
        plan.deaths.append(p)
    # an unmatched new cluster that took most of several old concepts continues the largest of them
    for j in sorted(set(dest.values()) - set(plan.matches)):
        sources = [p for p, d in dest.items() if d == j]
        if len(sources) >= 2:
            heir = max(sources, key=lambda p: (prev.concepts[p].size, -p))
            plan.matches[j] = heir
            del dest[heir]
    for p, j in dest.items():
        if j in plan.matches:
            plan.merges[p] = j
        else:
            plan.deaths.append(p)


def _finish(plan: Plan, x: np.ndarray) -> None:
    plan.cohesion, plan.spread = _cluster_stats(x, plan.labels, plan.centroids, plan.distances)
    plan.inertia = float((plan.distances ** 2).sum())


def _try_incremental(plan: Plan, x: np.ndarray, cfg: DiscoveryConfig) -> bool:
    prev = plan.prev
    present = {int(a) for a in plan.atom_ids}
    new_rows = np.asarray([int(a) not in prev.membership for a in plan.atom_ids], dtype=bool)
    gone = sum(1 for a in prev.membership if a not in present)
    change = (int(new_rows.sum()) + gone) / max(len(plan.atom_ids), 1)
    if change > cfg.incremental_max_change:
        plan.reason = f"{change:.0%} of the atoms changed (> {cfg.incremental_max_change:.0%}): full run"
        return False
    labels = np.asarray([prev.membership.get(int(a), -1) for a in plan.atom_ids], dtype=np.int64)
    if new_rows.any():
        lab_new, dist_new = _assign(x[new_rows], prev.centroids)
        prev_spread = np.asarray([max(c.spread, 1e-9) for c in prev.concepts])
        ratio = float(np.mean(dist_new / prev_spread[lab_new]))
        if ratio > cfg.drift_ratio:
            plan.reason = f"drift: new atoms lie {ratio:.2f}x the concepts' spread away: full run"
            return False
        labels[new_rows] = lab_new
    plan.mode = "incremental" if (new_rows.any() or gone) else "unchanged"
    plan.labels = labels
    plan.centroids = _means(x, labels, prev.centroids) if plan.mode == "incremental" else prev.centroids
    plan.distances = np.sqrt(_sqdist(x, plan.centroids)[np.arange(len(x)), labels]) \
        if len(x) <= 50000 else _assign(x, plan.centroids)[1]
    plan.changed = new_rows
    plan.matches = {i: i for i in range(len(prev.concepts))}
    plan.reason = plan.reason or f"{change:.1%} changed: only new atoms assigned"
    _finish(plan, x)
    return True


def plan_model(model: str, cfg: DiscoveryConfig) -> Plan:
    """Everything a run will write for one embedding model, computed without writing."""
    atom_ids, x, modalities = load_embeddings(model)
    plan = Plan(model=model, mode="full", atom_ids=atom_ids, modalities=modalities, prev=previous_concepts(model))
    finite = np.isfinite(x).all(1) if len(x) else np.zeros(0, bool)
    if len(x) and not finite.all():
        atom_ids, x = atom_ids[finite], x[finite]
        plan.atom_ids, plan.modalities = atom_ids, [m for m, f in zip(modalities, finite, strict=True) if f]
    if len(x) < cfg.min_atoms:
        plan.mode, plan.reason = "too_few", f"{len(x)} atoms (< {cfg.min_atoms}): concepts left as they were"
        return plan
    if plan.prev is not None and plan.prev.centroids.shape[1] != x.shape[1]:
        plan.prev = None  # the model changed dimension: start over
    if plan.prev is not None and not cfg.force_full and _try_incremental(plan, x, cfg):
        return plan
    fit = cluster_vectors(x, cfg, plan.prev)
    plan.centroids, plan.labels, plan.distances, plan.silhouette = fit.centroids, fit.labels, fit.distances, fit.silhouette
    if fit.degenerate:
        plan.mode, plan.reason = "degenerate", fit.reason
    plan.changed = np.ones(len(x), bool)
    _finish(plan, x)
    if plan.prev is not None:
        prev_spread = np.asarray([c.spread for c in plan.prev.concepts])
        plan.matches = _hungarian(plan.centroids, plan.spread, plan.prev, prev_spread, cfg.match_factor)
        _fates(plan, cfg)
    plan.reason = plan.reason or fit.reason
    return plan


@dataclass
class Fit:
    centroids: np.ndarray  # (K, D) float64
    labels: np.ndarray  # (N,) int64
    distances: np.ndarray  # (N,) float64
    silhouette: float | None
    degenerate: bool
    reason: str


def cluster_vectors(x: np.ndarray, cfg: DiscoveryConfig, prev: Prev | None = None) -> Fit:
    """The full (non-incremental) clustering of x (N, D) float32: k by silhouette on a sample,
    warm-started from `prev`, then k-means over all of x from the sample's centroids. No database."""
    xs = x[_sample(len(x), cfg.sample_size, cfg.seed)]
    degenerate, reason = False, ""
    if float(np.ptp(x, axis=0).max()) == 0.0:
        degenerate, reason = True, "all embeddings are identical: one concept"
        k, init, score = 1, x[:1].astype(np.float64), None
    else:
        k, init, score = choose_k(xs, cfg, prev)
        if k == 1:
            degenerate, reason, score = True, "fewer than 2 distinct embeddings: one concept", None
    fit = native.kmeans(x, k, seed=cfg.seed, max_iter=cfg.max_iter, init=init, method=cfg.method)
    centroids = np.asarray(fit.centroids, np.float64)
    labels, distances = _assign(x, centroids)
    reason = reason or f"k={k} by silhouette over {max(cfg.k_min, 2)}..{cfg.k_max} on {len(xs)} atoms"
    return Fit(centroids, labels, distances, score, degenerate, reason)


# ----------------------------------------------------------------------------- labels

STOP = set("""a an and are as at be by for from has have in is it its of on or that the this to was were will
with not but they their there these those you your we our can all any also than then them been being
into over more most some such only other which what when where who how""".split())
WORD = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{2,}")


def ctfidf_labels(docs_by_class: dict[int, list[str]], top: int = 4) -> dict[int, list[str]]:
    """Class-based TF-IDF (BERTopic): tf(t, c) normalised per class x log(1 + A / f(t)),
    A the mean words per class and f(t) the frequency of t over all classes."""
    tf: dict[int, Counter] = {}
    for c, docs in docs_by_class.items():
        tf[c] = Counter(w for d in docs for w in (m.group(0).lower() for m in WORD.finditer(d or ""))
                        if w not in STOP)
    total = Counter()
    for counts in tf.values():
        total.update(counts)
    if not total:
        return {c: [] for c in docs_by_class}
    avg = sum(total.values()) / max(len(tf), 1)
    out = {}
    for c, counts in tf.items():
        n = sum(counts.values()) or 1
        scored = sorted(((v / n) * math.log(1 + avg / total[t]), t) for t, v in counts.items())
        out[c] = [t for _, t in reversed(scored[-top:])]
    return out


def _representatives(plan: Plan, per: int = 3) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    order = np.lexsort((plan.distances, plan.labels))
    for i in order:
        lst = out.setdefault(int(plan.labels[i]), [])
        if len(lst) < per:
            lst.append(int(plan.atom_ids[i]))
    return out


def _atom_name(atom: Atom) -> str:
    name = (atom.metadata or {}).get("name") or atom.source_uri.rsplit("/", 1)[-1]
    if atom.time_start is not None:
        name = f"{name}@{atom.time_start:g}s"
    return name or f"#{atom.pk}"


def plan_labels(plan: Plan) -> tuple[dict[int, str], dict[int, list[int]]]:
    reps = _representatives(plan)
    text_like = Counter(plan.modalities).most_common(1)[0][0] in TEXT_MODALITIES
    if text_like:
        nearest = _representatives(plan, per=50)
        ids = [a for lst in nearest.values() for a in lst]
        texts = dict(Atom.objects.filter(id__in=ids).values_list("id", "text"))
        terms = ctfidf_labels({c: [texts.get(a) or "" for a in lst] for c, lst in nearest.items()})
        labels = {c: " ".join(t) or f"concept {c}" for c, t in terms.items()}
    else:
        atoms = Atom.objects.in_bulk([a for lst in reps.values() for a in lst])
        labels = {c: "≈ " + ", ".join(_atom_name(atoms[a]) for a in lst if a in atoms) for c, lst in reps.items()}
    return labels, reps


# ----------------------------------------------------------------------------- writing


def _concept_atom(model: str) -> Atom:
    key = uuid.uuid4().hex
    body = json.dumps({"concept": key, "model": model}, sort_keys=True).encode()
    return Atom.objects.create(sha256=hashlib.sha256(body).hexdigest(), modality="concept", mime="application/json",
                               size=len(body), content=body, in_blob=False, metadata={"concept": key, "model": model},
                               source_kind="derived", source_uri=f"concepts/{model}")


def _delete_memberships(concept_atom_ids: list[int], member_ids: list[int] | None = None) -> None:
    if not concept_atom_ids:
        return
    sql = "DELETE FROM atoms_atomrelation WHERE relation = %s AND target_id = ANY(%s)"
    params: list = [str(MEMBER_OF), concept_atom_ids]
    if member_ids is not None:
        sql += " AND source_id = ANY(%s)"
        params.append(member_ids)
    with connection.cursor() as cur:
        cur.execute(sql, params)


def _write_memberships(plan: Plan, concept_atoms: list[int], rows: np.ndarray, batch: int = 5000) -> int:
    now = timezone.now()
    rel = [AtomRelation(source_id=int(plan.atom_ids[i]), target_id=concept_atoms[int(plan.labels[i])],
                        relation=MEMBER_OF, weight=float(plan.distances[i]), created_at=now)
           for i in np.flatnonzero(rows)]
    AtomRelation.objects.bulk_create(rel, batch_size=batch, ignore_conflicts=True)
    return len(rel)


def apply_plan(plan: Plan, run: DiscoveryRun) -> dict:
    """Write one model's plan (inside the run's transaction). -> counts born/died/merged/assigned."""
    counts = {"born": 0, "died": 0, "merged": 0, "assigned": 0}
    if plan.mode == "too_few" or plan.centroids is None:
        return counts
    prev = plan.prev
    labels, reps = plan_labels(plan)
    sizes = np.bincount(plan.labels, minlength=len(plan.centroids))
    now = timezone.now()
    modality = Counter(plan.modalities).most_common(1)[0][0]
    concepts: list[Concept | None] = []
    for j in range(len(plan.centroids)):
        if sizes[j] == 0:  # every member left: a matched concept dies, an unmatched cluster is dropped
            if j in plan.matches:
                plan.deaths.append(plan.matches.pop(j))
            concepts.append(None)
            continue
        fields = dict(centroid=plan.centroids[j].astype(np.float32), label=labels.get(j, "")[:300],
                      representatives=reps.get(j, []), cohesion=float(plan.cohesion[j]), spread=float(plan.spread[j]),
                      size=int(sizes[j]), run=run, updated_at=now, modality=modality)
        if j in plan.matches:
            concept = prev.concepts[plan.matches[j]]
            for k, v in fields.items():
                setattr(concept, k, v)
            concept.state = Concept.State.ALIVE
            concept.save()
        else:
            concept = Concept.objects.create(atom=_concept_atom(plan.model), model=plan.model, born_run=run,
                                             state=Concept.State.BORN, **fields)
            ConceptEvent.objects.create(run=run, concept=concept, kind=ConceptEvent.Kind.BORN)
            counts["born"] += 1
        Atom.objects.filter(pk=concept.atom_id).update(text=concept.label)
        concepts.append(concept)
    if prev is not None:
        for p, old in enumerate(prev.concepts):
            if p in plan.merges and concepts[plan.merges[p]] is None:
                plan.deaths.append(plan.merges.pop(p))
            if p in plan.merges:
                old.state, old.merged_into = Concept.State.MERGED, concepts[plan.merges[p]]
                ConceptEvent.objects.create(run=run, concept=old, kind=ConceptEvent.Kind.MERGED, other=old.merged_into)
                counts["merged"] += 1
            elif p in plan.deaths:
                old.state = Concept.State.DEAD
                ConceptEvent.objects.create(run=run, concept=old, kind=ConceptEvent.Kind.DIED)
                counts["died"] += 1
            else:
                continue
            old.run, old.updated_at = run, now
            old.save()
    concept_atoms = [c.atom_id if c is not None else 0 for c in concepts]
    if plan.mode in ("full", "degenerate"):
        _delete_memberships([c.atom_id for c in prev.concepts] if prev else [])
        _delete_memberships([a for a in concept_atoms if a])
    elif prev is not None:
        present = {int(a) for a in plan.atom_ids}
        gone = [a for a in prev.membership if a not in present]
        _delete_memberships([c.atom_id for c in prev.concepts], gone)
    counts["assigned"] = _write_memberships(plan, concept_atoms, plan.changed)
    return counts


class RunInProgress(Exception):
    pass


def _lock_key() -> int:
    digest = hashlib.sha256(f"concepts:{connection.schema_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _try_lock() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [_lock_key()])
        return bool(cur.fetchone()[0])


def _unlock() -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", [_lock_key()])


def concepts_discover(*, tenant, trigger: str = "manual", config: DiscoveryConfig | None = None,
                      progress=None, checkpoint: Callable[[str], None] | None = None) -> DiscoveryRun:
    """Run discovery for the tenant whose schema is active. Returns the run (done, skipped or failed:
    a failed run re-raises after recording its error; the previous concepts stay as they were).

    `progress` (hartonomous.progress.Progress-like, optional) is advanced once per model planned and
    once per model written; `checkpoint(stage)` is called between stages (tests use it to interrupt).
    """
    cfg = config or DiscoveryConfig()
    if not _try_lock():
        return DiscoveryRun.objects.create(state=DiscoveryRun.State.SKIPPED, trigger=trigger,
                                           finished_at=timezone.now(), outcome={"reason": "another run is in progress"})
    try:
        return _discover_locked(cfg, trigger, progress, checkpoint or (lambda stage: None))
    finally:
        _unlock()


def _discover_locked(cfg, trigger, progress, checkpoint) -> DiscoveryRun:
    run = DiscoveryRun.objects.create(trigger=trigger)
    try:
        models = [m for m in embedding_models() if cfg.models is None or m in cfg.models]
        if progress is not None and getattr(progress, "total", None) is None:
            progress.total = 2 * len(models)
        plans = []
        for i, model in enumerate(models):
            checkpoint(f"plan:{model}")
            plans.append(plan_model(model, cfg))
            _progress(run, progress, (i + 1) / (2 * max(len(models), 1)))
        with transaction.atomic():
            totals = Counter()
            for plan in plans:
                totals.update(apply_plan(plan, run))
                checkpoint(f"write:{plan.model}")
                if progress is not None:
                    progress.advance()
            _close_run(run, plans, totals, models)
        return run
    except BaseException as exc:
        DiscoveryRun.objects.filter(pk=run.pk).update(state=DiscoveryRun.State.FAILED, finished_at=timezone.now(),
                                                      error=f"{type(exc).__name__}: {exc}"[:2000])
        run.refresh_from_db()
        raise


def _progress(run: DiscoveryRun, progress, share: float) -> None:
    DiscoveryRun.objects.filter(pk=run.pk).update(progress=share)
    if progress is not None:
        progress.advance()


def _close_run(run: DiscoveryRun, plans: list[Plan], totals: Counter, models: list[str]) -> None:
    scored = [p.silhouette for p in plans if p.silhouette is not None and not math.isnan(p.silhouette)]
    inertias = [p.inertia for p in plans if p.inertia is not None]
    run.state, run.finished_at, run.progress = DiscoveryRun.State.DONE, timezone.now(), 1.0
    run.k = Concept.objects.filter(state__in=[Concept.State.BORN, Concept.State.ALIVE]).count()
    run.silhouette = float(np.mean(scored)) if scored else None
    run.inertia = float(sum(inertias)) if inertias else None
    run.atoms_seen = int(sum(len(p.atom_ids) for p in plans))
    run.atoms_assigned, run.born, run.died, run.merged = (totals["assigned"], totals["born"], totals["died"],
                                                         totals["merged"])
    run.outcome = {p.model: p.outcome() for p in plans} or {"reason": "no embeddings: nothing to discover"}
    run.save()
