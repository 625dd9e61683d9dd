"""Binding: concepts that co-occur become related.

A context is one place atoms appear together: the same time bucket of a stream or video (atoms
PART_OF the same parent with time_start; a segment covers every bucket it overlaps, and an atom that
occurs several times — an identical frame shown again — counts in the bucket of every occurrence), the same
document (PART_OF the same parent, no time), or the same session (metadata["session"]). Each
context holds the set of live concepts its atoms are members of. Over N contexts, for a concept pair
(a, b) with n_ab shared contexts:

    confidence = min(n_ab / 100, 1)          (the seed's rule)
    PMI  = log(n_ab * N / (n_a * n_b)),  lift = exp(PMI),  NPMI = PMI / -log(n_ab / N)

so pairs that are merely frequent (lift ~ 1) are dropped by the thresholds. An edge is IS_A a -> b
when a almost never appears without b (n_ab / n_a >= BINDING_ISA_MIN) and b is more common; else
RELATED_TO from the lower concept id to the higher. A rerun replaces all binding edges at once.
Image and audio concepts that share time buckets of a video are bound the same way (cross-modal).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from django.conf import settings
from django.db import connection, transaction

from atoms.models import AtomRelation, RelationType

SQL_MEMBERS = """
SELECT m.target_id, a.id, a.time_start, a.time_end, a.metadata->>'session', p.target_id, p.metadata->'occurrences'
FROM atoms_atomrelation m
JOIN atoms_atom a ON a.id = m.source_id AND a.deleted_at IS NULL
JOIN concepts_concept c ON c.atom_id = m.target_id AND c.state IN ('born', 'alive')
LEFT JOIN atoms_atomrelation p ON p.source_id = m.source_id AND p.relation = 'PART_OF'
WHERE m.relation = 'MEMBER_OF'
"""


@dataclass
class BindingConfig:
    """Thresholds; None reads the setting (env HARTONOMOUS_BINDING_*), else the default shown."""

    bucket_seconds: float | None = None
    min_count: int | None = None
    min_pmi: float | None = None
    min_lift: float | None = None
    isa_min: float | None = None

    def __post_init__(self):
        def pick(value, name, default):
            return value if value is not None else getattr(settings, name, default)

        self.bucket_seconds = float(pick(self.bucket_seconds, "BINDING_BUCKET_SECONDS", 5.0))
        self.min_count = int(pick(self.min_count, "BINDING_MIN_COUNT", 2))
        self.min_pmi = float(pick(self.min_pmi, "BINDING_MIN_PMI", 0.5))
        self.min_lift = float(pick(self.min_lift, "BINDING_MIN_LIFT", 1.5))
        self.isa_min = float(pick(self.isa_min, "BINDING_ISA_MIN", 0.95))
        if self.bucket_seconds <= 0 or self.min_count < 1:
            raise ValueError("bucket_seconds must be > 0 and min_count >= 1")


@dataclass
class BindingResult:
    contexts: int
    pairs: int
    edges: int
    cross_modal: int


def _contexts(bucket: float) -> dict[tuple, set[int]]:
    """context key -> concept atom ids present there."""
    out: dict[tuple, set[int]] = {}
    with connection.cursor() as cur:
        cur.execute(SQL_MEMBERS)
        for concept, _atom, t0, t1, session, parent, occurrences in cur.fetchall():
            keys = []
            if parent is not None and t0 is not None:
                for start, end in _occurrences(occurrences, t0, t1):
                    keys += [("t", parent, b) for b in _buckets(start, end, bucket)]
            elif parent is not None:
                keys.append(("d", parent))
            if session:
                keys.append(("s", session))
            for key in keys:
                out.setdefault(key, set()).add(concept)
    return out


def _occurrences(stored, t0: float, t1: float | None) -> list[tuple[float, float | None]]:
    """Every time the atom occurs in its parent (an identical frame shown twice is one atom whose PART_OF
    edge lists both times), else its own time."""
    if isinstance(stored, str):
        stored = json.loads(stored)
    spans = [(float(a), None if b is None else float(b)) for a, b in (stored or []) if a is not None]
    return spans or [(t0, t1)]


def _buckets(t0: float, t1: float | None, bucket: float) -> range:
    first = int(math.floor(t0 / bucket))
    last = int(math.floor((t1 - 1e-9) / bucket)) if t1 is not None and t1 > t0 else first
    return range(first, max(first, last) + 1)


def pair_statistics(contexts: dict[tuple, set[int]]) -> tuple[int, Counter, Counter]:
    """(N contexts, n per concept, n per unordered concept pair)."""
    single, pair = Counter(), Counter()
    for concepts in contexts.values():
        single.update(concepts)
        pair.update(combinations(sorted(concepts), 2))
    return len(contexts), single, pair


def _edge(a: int, b: int, n_ab: int, n: int, single: Counter, cfg: BindingConfig, modality: dict):
    pmi = math.log(n_ab * n / (single[a] * single[b]))
    lift = math.exp(pmi)
    if n_ab < cfg.min_count or pmi < cfg.min_pmi or lift < cfg.min_lift:
        return None
    npmi = pmi / -math.log(n_ab / n) if n_ab < n else 1.0
    source, target, relation = a, b, RelationType.RELATED_TO
    for x, y in ((a, b), (b, a)):
        if n_ab / single[x] >= cfg.isa_min and single[y] > single[x]:
            source, target, relation = x, y, RelationType.IS_A
    cross = modality.get(a) != modality.get(b)
    meta = {"binding": True, "count": n_ab, "contexts": n, "pmi": round(pmi, 6), "npmi": round(npmi, 6),
            "lift": round(lift, 6), "cross_modal": cross, "modalities": [modality.get(source), modality.get(target)]}
    return AtomRelation(source_id=source, target_id=target, relation=relation, weight=min(n_ab / 100.0, 1.0),
                        metadata=meta)


def concepts_bind(*, tenant, config: BindingConfig | None = None) -> BindingResult:
    """Recompute the binding edges between the live concepts of the active tenant, all at once."""
    from .models import Concept

    cfg = config or BindingConfig()
    contexts = _contexts(cfg.bucket_seconds)
    n, single, pair = pair_statistics(contexts)
    modality = dict(Concept.objects.filter(state__in=["born", "alive"]).values_list("atom_id", "modality"))
    edges = [e for (a, b), n_ab in pair.items() if (e := _edge(a, b, n_ab, n, single, cfg, modality)) is not None]
    with transaction.atomic():
        AtomRelation.objects.filter(relation__in=[RelationType.RELATED_TO, RelationType.IS_A],
                                    source__modality="concept", target__modality="concept",
                                    metadata__binding=True)._raw_delete(using="default")
        AtomRelation.objects.bulk_create(edges, batch_size=2000, ignore_conflicts=True)
    return BindingResult(contexts=n, pairs=len(pair), edges=len(edges),
                         cross_modal=sum(1 for e in edges if e.metadata["cross_modal"]))
