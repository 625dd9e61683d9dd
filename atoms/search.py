"""Hybrid search: HNSW vector hits, full-text hits and trigram hits fused by reciprocal rank fusion,
with the vector side reranked exactly on native/. Every hit says why it matched."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from django.db import connection

from hartonomous.errors import ValidationFailed

from .embedding import text_provider
from .models import Atom, AtomEmbedding
from .selectors import (
    AtomFilters,
    embeddings_of,
    exact_cosines,
    fulltext_candidates,
    trigram_candidates,
    vector_candidates,
)

RRF_K = 60
# Chosen on 300 dev known-item queries of the PostgreSQL docs (bench/atoms/bench_relevance.py): the best
# dev recall@10 among weightings that keep all three legs. Trigram matches the head of an atom's text
# (headings, names), so it only speaks for short queries close to a heading, where it is very precise.
DEFAULT_WEIGHTS = {"vector": 1.0, "fulltext": 1.0, "trigram": 1.5}


@dataclass
class SearchQuery:
    text: str | None = None
    vector: np.ndarray | None = None
    atom: Atom | None = None
    model: str | None = None
    k: int = 10
    filters: AtomFilters = field(default_factory=AtomFilters)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ef_search: int | None = None
    oversample: int = 4


@dataclass
class SearchHit:
    atom: Atom
    score: float
    why: dict


def _query_vector(query: SearchQuery) -> tuple[np.ndarray | None, str | None]:
    if query.vector is not None:
        model = query.model or text_provider().name
        return np.asarray(query.vector, dtype=np.float32), model
    if query.atom is not None:
        qs = AtomEmbedding.objects.filter(atom=query.atom)
        row = (qs.filter(model=query.model) if query.model else qs).order_by("id").first()
        if row is None:
            raise ValidationFailed("That atom has no embedding yet.", details={"atom": query.atom.pk})
        return np.asarray(row.vector, dtype=np.float32), row.model
    if query.text and query.weights.get("vector", 0) > 0:
        provider = text_provider()
        return provider.embed_texts([query.text])[0], provider.name
    return None, None


def _check_dimension(vector: np.ndarray, model: str) -> None:
    """Refuse a vector whose length is not the model's (the SQL casts would fail with a 500). Plain
    SQL: it runs on every vector search, and the ORM's query building costs ~4x the CPU."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT dim FROM atoms_atomembedding WHERE model = %s ORDER BY id LIMIT 1", [model])
        row = cursor.fetchone()
    sample = row[0] if row else None
    if sample is not None and sample != vector.shape[0]:
        raise ValidationFailed(f"{model} vectors have {sample} dimensions, not {vector.shape[0]}.",
                               details={"expected": sample, "got": int(vector.shape[0])})


def _ranked_lists(query: SearchQuery, vector, model) -> dict[str, list[tuple[int, float]]]:
    depth = max(query.k * query.oversample, 20)
    lists: dict[str, list[tuple[int, float]]] = {}
    if vector is not None and query.weights.get("vector", 0) > 0:
        _check_dimension(vector, model)
        lists["vector"] = vector_candidates(vector=vector, model=model, k=depth, filters=query.filters,
                                            ef_search=query.ef_search)
    if query.text and query.weights.get("fulltext", 0) > 0:
        lists["fulltext"] = fulltext_candidates(query=query.text, k=depth, filters=query.filters)
    if query.text and query.weights.get("trigram", 0) > 0:
        lists["trigram"] = trigram_candidates(query=query.text, k=depth, filters=query.filters)
    return lists


def _rerank_vector(lists, vector, model) -> dict[int, float]:
    """Exact cosine for every candidate that has an embedding; the vector list is re-sorted by it.

    The vector list's scores are already exact (vector_candidates scores each hit on its full
    vector, whatever the index ordered by), so only the other lists' candidates are fetched and
    scored on native/: fetching and decoding 40 vectors cost ~4 ms of CPU per query."""
    if vector is None:
        return {}
    cosines = dict(lists.get("vector", []))
    missing = list(dict.fromkeys(i for hits in lists.values() for i, _ in hits if i not in cosines))
    if missing:
        cosines.update(exact_cosines(vector, embeddings_of(atom_ids=missing, model=model)))
    if "vector" in lists:
        lists["vector"] = sorted(lists["vector"], key=lambda h: -h[1])
    return cosines


def fuse(lists: dict[str, list[tuple[int, float]]], weights: dict[str, float]) -> dict[int, dict]:
    """Reciprocal rank fusion: score = Σ weight / (60 + rank)."""
    fused: dict[int, dict] = {}
    for name, hits in lists.items():
        for rank, (atom_id, raw) in enumerate(hits, start=1):
            entry = fused.setdefault(atom_id, {"score": 0.0, "why": {}})
            entry["score"] += weights.get(name, 0.0) / (RRF_K + rank)
            entry["why"][name] = {"rank": rank, "score": round(raw, 6)}
    return fused


def atom_search(query: SearchQuery) -> list[SearchHit]:
    if not (query.text or query.vector is not None or query.atom is not None):
        raise ValidationFailed("Give a text, a vector or an atom to search by.")
    vector, model = _query_vector(query)
    lists = _ranked_lists(query, vector, model)
    cosines = _rerank_vector(lists, vector, model)
    fused = fuse(lists, query.weights)
    if query.atom is not None:
        fused.pop(query.atom.pk, None)
    best = sorted(fused.items(), key=lambda item: (-item[1]["score"], item[0]))[: query.k]
    atoms = Atom.objects.defer("content").in_bulk([atom_id for atom_id, _ in best])
    hits = []
    for atom_id, entry in best:
        if atom_id in cosines:
            entry["why"]["cosine"] = round(cosines[atom_id], 6)
        hits.append(SearchHit(atoms[atom_id], entry["score"], entry["why"]))
    return hits
