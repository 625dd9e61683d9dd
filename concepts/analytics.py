"""The seed's analytics aggregates as services over tenant data, each result stored (AnalyticsResult).

- variance of a sensor series (streaming moments, native.moments_*)
- causal test between two sensor series (native.granger_f both ways + native.lagged_xcorr)
- repetition / boredom of a text (e.g. a generation) (native.repetition_rate, native.boredom)
- attention of a query atom over a concept's members (native.attention: mass per member)
- proof: a Merkle root over a concept's member digests, and one member's audit path (native.merkle_*)

A sensor series is (source, field): the SENSOR atoms PART_OF the source atom (an ingested CSV/JSON),
ordered by time_start, reading metadata["values"][field] (row parts) or
metadata["fields"][field]["mean"] (bucket parts).
"""
from __future__ import annotations

import re

import numpy as np

import native
from atoms.models import Atom, AtomEmbedding, AtomRelation, RelationType
from hartonomous.errors import NotFound, Unprocessable, ValidationFailed

from .models import AnalyticsResult, Concept

TOKEN = re.compile(r"\w+|[^\w\s]")


def sensor_series(*, source_id: int, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(times (T,), values (T,)) float64 of one field of a sensor source, in time order."""
    if not Atom.objects.filter(pk=source_id, deleted_at__isnull=True).exists():
        raise NotFound("No such sensor source.", details={"source": source_id})
    rows = (Atom.objects.filter(modality="sensor", deleted_at__isnull=True, relations_out__target_id=source_id,
                                relations_out__relation=RelationType.PART_OF)
            .order_by("time_start", "id").values_list("time_start", "metadata"))
    times, values = [], []
    for t, meta in rows:
        v = (meta.get("values") or {}).get(field)
        if v is None:
            v = ((meta.get("fields") or {}).get(field) or {}).get("mean")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and t is not None:
            times.append(t)
            values.append(float(v))
    if not values:
        raise Unprocessable("The source has no numeric values for this field.", code="series.empty",
                            details={"source": source_id, "field": field})
    return np.asarray(times, np.float64), np.asarray(values, np.float64)


def _store(kind: str, params: dict, result: dict) -> AnalyticsResult:
    return AnalyticsResult.objects.create(kind=kind, params=params, result=result)


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def analytics_variance(*, tenant, source_id: int, field: str, chunk: int = 4096) -> AnalyticsResult:
    _, values = sensor_series(source_id=source_id, field=field)
    state = native.moments_init(1)
    for start in range(0, len(values), chunk):
        state = native.moments_accumulate(state, values[start:start + chunk])
    m = native.moments_finish(state)
    return _store("variance", {"source": source_id, "field": field},
                  {"count": int(m.count), "mean": _num(m.mean[0]), "variance": _num(m.var_population[0]),
                   "sample_variance": _num(m.var_sample[0]) if m.count > 1 else None})


def _aligned(x_source: int, x_field: str, y_source: int, y_field: str) -> tuple[np.ndarray, np.ndarray]:
    tx, vx = sensor_series(source_id=x_source, field=x_field)
    ty, vy = sensor_series(source_id=y_source, field=y_field)
    common, ix, iy = np.intersect1d(tx, ty, return_indices=True)
    return vx[ix], vy[iy]


def analytics_causal(*, tenant, x_source: int, x_field: str, y_source: int, y_field: str, lag: int = 2,
                     max_lag: int = 5) -> AnalyticsResult:
    """Does x Granger-cause y (and y cause x)? Series are joined on equal timestamps."""
    x, y = _aligned(x_source, x_field, y_source, y_field)
    if len(x) - 3 * lag - 1 < 1 or len(x) < max_lag + 2:
        raise Unprocessable("Too few aligned points for this lag.", code="series.too_short",
                            details={"points": int(len(x)), "lag": lag, "max_lag": max_lag})
    xy, yx = native.granger_f(x, y, lag), native.granger_f(y, x, lag)
    xc = native.lagged_xcorr(x, y, max_lag)
    best = int(np.nanargmax(np.abs(xc))) - max_lag
    params = {"x": [x_source, x_field], "y": [y_source, y_field], "lag": lag, "max_lag": max_lag}
    return _store("causal", params, {
        "points": int(len(x)), "x_causes_y": {"f": _num(xy.f), "p": _num(xy.p_value)},
        "y_causes_x": {"f": _num(yx.f), "p": _num(yx.p_value)}, "xcorr": [_num(v) for v in xc],
        "best_lag": best, "best_xcorr": _num(xc[best + max_lag])})


def tokens_of(text: str) -> np.ndarray:
    """Word/punctuation tokens mapped to ints by first appearance (repetition needs only identity)."""
    ids: dict[str, int] = {}
    return np.asarray([ids.setdefault(t.lower(), len(ids)) for t in TOKEN.findall(text)], dtype=np.int64)


def analytics_repetition(*, tenant, atom_id: int | None = None, text: str | None = None, n: int = 3,
                         max_n: int = 4) -> AnalyticsResult:
    if (atom_id is None) == (text is None):
        raise ValidationFailed("Give exactly one of atom_id or text.")
    if atom_id is not None:
        atom = Atom.objects.filter(pk=atom_id, deleted_at__isnull=True).first()
        if atom is None:
            raise NotFound("No such atom.", details={"atom": atom_id})
        text = atom.text or ""
    tokens = tokens_of(text)
    if len(tokens) < 2:
        raise Unprocessable("The text has fewer than 2 tokens.", code="text.too_short")
    return _store("repetition", {"atom": atom_id, "n": n, "max_n": max_n},
                  {"tokens": int(len(tokens)), "repetition_rate": native.repetition_rate(tokens, n),
                   "boredom": native.boredom(tokens, max_n=max_n)})


def _members_with_vectors(concept: Concept, limit: int = 2000) -> tuple[list[int], np.ndarray]:
    ids = list(AtomRelation.objects.filter(relation=RelationType.MEMBER_OF, target_id=concept.atom_id)
               .order_by("weight", "source_id").values_list("source_id", flat=True)[:limit])
    vec = dict(AtomEmbedding.objects.filter(atom_id__in=ids, model=concept.model).values_list("atom_id", "vector"))
    ids = [a for a in ids if a in vec]
    return ids, np.asarray([vec[a] for a in ids], np.float32).reshape(len(ids), -1)


def analytics_attention(*, tenant, concept: Concept, query_atom_id: int, top: int = 10) -> AnalyticsResult:
    """Softmax attention of a query atom's embedding over the concept's members: who it attends to."""
    q = AtomEmbedding.objects.filter(atom_id=query_atom_id, model=concept.model).values_list("vector", flat=True).first()
    if q is None:
        raise Unprocessable("The query atom has no embedding under the concept's model.", code="embedding.missing")
    ids, keys = _members_with_vectors(concept)
    if not ids:
        raise Unprocessable("The concept has no members.", code="concept.empty")
    _, mass = native.attention(np.asarray(q, np.float32), keys, keys)
    order = np.argsort(-mass)[:top]
    return _store("attention", {"concept": concept.pk, "query": query_atom_id},
                  {"members": len(ids), "top": [{"atom": ids[i], "mass": float(mass[i])} for i in order]})


def analytics_membership_proof(*, tenant, concept: Concept, atom_id: int) -> AnalyticsResult:
    """Merkle root over the concept's member digests (sorted by sha256) and the audit path of one member."""
    shas = sorted(AtomRelation.objects.filter(relation=RelationType.MEMBER_OF, target_id=concept.atom_id)
                  .values_list("source__sha256", "source_id"))
    index = next((i for i, (_, a) in enumerate(shas) if a == atom_id), None)
    if index is None:
        raise NotFound("The atom is not a member of this concept.", details={"atom": atom_id})
    digests = [bytes.fromhex(s) for s, _ in shas]
    root = native.merkle_root(digests)
    proof = native.merkle_proof(digests, index)
    assert native.merkle_verify(digests[index], proof, root)
    return _store("proof", {"concept": concept.pk, "atom": atom_id},
                  {"root": root.hex(), "leaves": len(digests), "index": index,
                   "path": [[h.hex(), left] for h, left in proof]})
