"""Reads of the atom store: lookups, filtered lists, and hybrid search (vector + full text + trigram)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet

import native

from .models import TRIGRAM_HEAD, Atom

_SHA = re.compile(r"^[0-9a-f]{64}$")


def atom_by_ref(*, ref: str, include_deleted: bool = False) -> Atom | None:
    """An atom by numeric id or by its SHA-256."""
    qs = Atom.objects.all() if include_deleted else Atom.objects.filter(deleted_at__isnull=True)
    ref = str(ref).strip().lower()
    if _SHA.match(ref):
        return qs.filter(sha256=ref).first()
    if ref.isdigit() and int(ref) < 2**63:
        return qs.filter(pk=int(ref)).first()
    return None


@dataclass
class AtomFilters:
    modality: list[str] = field(default_factory=list)
    metadata: dict | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    source_kind: str | None = None
    source_uri_prefix: str | None = None
    region: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 of the 2D projection
    exclude_ids: list[int] = field(default_factory=list)  # e.g. a held-out document's atoms

    def sql(self, alias: str = "a") -> tuple[str, list]:
        """A WHERE fragment (always starting with the soft-delete guard) and its parameters."""
        clauses, params = [f"{alias}.deleted_at IS NULL"], []
        if self.modality:
            clauses.append(f"{alias}.modality = ANY(%s)")
            params.append(list(self.modality))
        if self.metadata:
            import json

            clauses.append(f"{alias}.metadata @> %s::jsonb")
            params.append(json.dumps(self.metadata))
        if self.created_after:
            clauses.append(f"{alias}.created_at >= %s")
            params.append(self.created_after)
        if self.created_before:
            clauses.append(f"{alias}.created_at < %s")
            params.append(self.created_before)
        if self.source_kind:
            clauses.append(f"{alias}.source_kind = %s")
            params.append(self.source_kind)
        if self.source_uri_prefix:
            clauses.append(f"{alias}.source_uri LIKE %s")
            params.append(self.source_uri_prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%")
        if self.exclude_ids:
            clauses.append(f"NOT ({alias}.id = ANY(%s))")
            params.append([int(i) for i in self.exclude_ids])
        return " AND ".join(clauses), params

    def region_sql(self, alias: str = "e") -> tuple[str, list]:
        if not self.region:
            return "", []
        x1, y1, x2, y2 = self.region
        return f" AND {alias}.point <@ box(point(%s, %s), point(%s, %s))", [x1, y1, x2, y2]

    def queryset(self, qs: QuerySet[Atom]) -> QuerySet[Atom]:
        qs = qs.filter(deleted_at__isnull=True)
        if self.modality:
            qs = qs.filter(modality__in=self.modality)
        if self.metadata:
            qs = qs.filter(metadata__contains=self.metadata)
        if self.created_after:
            qs = qs.filter(created_at__gte=self.created_after)
        if self.created_before:
            qs = qs.filter(created_at__lt=self.created_before)
        if self.source_kind:
            qs = qs.filter(source_kind=self.source_kind)
        if self.source_uri_prefix:
            qs = qs.filter(source_uri__startswith=self.source_uri_prefix)
        if self.exclude_ids:
            qs = qs.exclude(id__in=self.exclude_ids)
        return qs


def atoms_list(*, filters: AtomFilters) -> QuerySet[Atom]:
    return filters.queryset(Atom.objects.all()).defer("content", "text").order_by("-created_at", "-id")


_VEC_FORMATS: dict[int, str] = {}


def _vec(vector) -> str:
    """The pgvector text literal of a vector (8 significant digits; one C-level format call)."""
    values = np.asarray(vector, dtype=np.float64).ravel().tolist()
    fmt = _VEC_FORMATS.get(len(values))
    if fmt is None:
        fmt = _VEC_FORMATS[len(values)] = "[" + ",".join(["%.8g"] * len(values)) + "]"
    return fmt % tuple(values)


_ef_source = None  # () -> int | None: the tenant's tuned ef_search (registered by the autonomy app)
_ef_cache: dict[str, tuple[float, int | None]] = {}
EF_CACHE_SECONDS = 10.0


def register_ef_search_source(fn) -> None:
    """A higher layer (autonomy's reindex executor tunes it) tells search where the tenant's ef_search is."""
    global _ef_source
    _ef_source = fn
    _ef_cache.clear()


def effective_ef_search(k: int, requested: int | None = None) -> int:
    """The ef_search a search uses: the request's, else the tenant's tuned value (cached 10 s per
    schema), else HARTONOMOUS_SEARCH_EF_SEARCH; never below k."""
    ef = requested
    if ef is None and _ef_source is not None:
        schema, now = connection.schema_name, time.monotonic()
        hit = _ef_cache.get(schema)
        if hit is None or now - hit[0] > EF_CACHE_SECONDS:
            hit = _ef_cache[schema] = (now, _ef_source())
        ef = hit[1]
    return max(int(ef or settings.SEARCH_EF_SEARCH), k)


HNSW_SESSION_ATTR = "_hartonomous_hnsw"  # on the psycopg connection: the ef_search its session has set
_SET_HNSW = ("SELECT set_config('hnsw.ef_search', %s, {local}), "
             "set_config('hnsw.iterative_scan', 'relaxed_order', {local})")


def hnsw_session_prepare(cursor, ef: int) -> None:
    """Make the next HNSW scan on this connection use `ef` and iterative (filter-safe) scans.

    Outside a transaction the settings are made for the session, once per value: the value set is
    remembered on the psycopg connection itself (so it follows the connection through the pool, to
    any tenant; a new connection starts unset), and the common case costs no round trip. Inside a
    transaction they are made LOCAL, because a rollback would silently undo a session-level SET."""
    raw = connection.connection
    if connection.in_atomic_block:
        cursor.execute(_SET_HNSW.format(local="true"), [str(ef)])
    elif getattr(raw, HNSW_SESSION_ATTR, None) != ef:
        cursor.execute(_SET_HNSW.format(local="false"), [str(ef)])
        setattr(raw, HNSW_SESSION_ATTR, ef)


def vector_candidates(*, vector: np.ndarray, model: str, k: int, filters: AtomFilters,
                      ef_search: int | None = None) -> list[tuple[int, float]]:
    """(atom id, exact cosine) of the `k` nearest atoms from the HNSW index of `model` (on
    `vector::halfvec(D)`, migration 0005: the ORDER BY expression must stay identical to the
    index's), filtered without losing results (iterative index scans keep scanning until k rows
    pass the filter). Soft-deleted atoms never pass: the join to atoms_atom is always made."""
    dim = int(vector.shape[0])
    where, params = filters.sql("a")
    region, region_params = filters.region_sql("e")
    literal = _vec(vector)
    sql = f"""
        SELECT e.atom_id, 1 - (e.vector::vector({dim}) <=> %s::vector({dim}))
        FROM atoms_atomembedding e JOIN atoms_atom a ON a.id = e.atom_id
        WHERE e.model = %s AND {where}{region}
        ORDER BY e.vector::halfvec({dim}) <=> %s::halfvec({dim})
        LIMIT %s"""
    with connection.cursor() as cursor:
        hnsw_session_prepare(cursor, effective_ef_search(k, ef_search))
        cursor.execute(sql, [literal, model, *params, *region_params, literal, k])
        rows = cursor.fetchall()
    # relaxed_order may return the filtered hits slightly out of order: sort by the exact cosine
    return sorted(((row[0], float(row[1])) for row in rows), key=lambda hit: -hit[1])


def nearest_by_vector(*, vector: np.ndarray, model: str, k: int) -> list[tuple[int, float]]:
    return vector_candidates(vector=vector, model=model, k=k, filters=AtomFilters())


def or_tsquery(text: str) -> str:  # ranked by ts_rank with length normalisation 1 (1 + log length)
    """Any of the query's words (ranked by how many match), like a bag-of-words retriever; the
    words are reduced to [A-Za-z0-9_] so the query syntax cannot be injected."""
    words = sorted(set(re.findall(r"\w+", text.lower())))[:64]
    return " | ".join(f"'{w}'" for w in words)


def fulltext_candidates(*, query: str, k: int, filters: AtomFilters) -> list[tuple[int, float]]:
    terms = or_tsquery(query)
    if not terms:
        return []
    where, params = filters.sql("a")
    sql = f"""
        SELECT a.id, ts_rank(a.search_vector, q, 1) AS rank
        FROM atoms_atom a, to_tsquery('english', %s) q
        WHERE a.search_vector @@ q AND {where}
        ORDER BY rank DESC, a.id LIMIT %s"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [terms, *params, k])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def trigram_candidates(*, query: str, k: int, filters: AtomFilters) -> list[tuple[int, float]]:
    """(atom id, word similarity) of the query against the head of each atom's text (its first
    TRIGRAM_HEAD characters: headings, titles, names), through the partial expression index
    `atom_trgm_head`; the expression must stay identical to the index's for the planner to use it."""
    where, params = filters.sql("a")
    head = f"left(a.text, {TRIGRAM_HEAD})"
    sql = f"""
        SELECT a.id, word_similarity(%s, {head}) AS sim
        FROM atoms_atom a
        WHERE %s <%% {head} AND a.search_vector IS NOT NULL AND {where}
        ORDER BY sim DESC, a.id LIMIT %s"""
    with transaction.atomic(), connection.cursor() as cursor:
        # the planner prices word_similarity like an addition, so on small tables it reads every row
        # (100 ms on 2K sections) instead of the index (2.6 ms): always take the index.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(sql, [query, query, *params, k])
        return [(row[0], float(row[1])) for row in cursor.fetchall()]


def embeddings_of(*, atom_ids: list[int], model: str) -> dict[int, np.ndarray]:
    """{atom id: float32 vector} of `model`. Read in pgvector's binary form (`vector_send`: int16 dim,
    int16 unused, dim big-endian float32) and decoded by NumPy: ~7 µs a vector against ~110 µs for
    the ORM parsing the text form (the hybrid search's rerank reads up to 80 of them a query)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT atom_id, vector_send(vector) FROM atoms_atomembedding "
                       "WHERE model = %s AND atom_id = ANY(%s)", [model, [int(i) for i in atom_ids]])
        rows = cursor.fetchall()
    return {atom_id: np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32) for atom_id, data in rows}


def exact_cosines(query: np.ndarray, vectors: dict[int, np.ndarray]) -> dict[int, float]:
    """Exact cosine of the query against each candidate, on native/ (the rerank step)."""
    if not vectors:
        return {}
    ids = list(vectors)
    matrix = np.stack([vectors[i] for i in ids]).astype(np.float32)  # (N, D)
    scores = native.scores(query.astype(np.float32), matrix, metric="cosine")
    return {atom_id: float(score) for atom_id, score in zip(ids, np.ravel(scores), strict=True)}
