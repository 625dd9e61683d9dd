"""The HNSW candidate query (`atoms.selectors.vector_candidates`) on the real embedded PostgreSQL:
the halfvec index is used, scores are exact, soft-deleted atoms never come back, and the ef_search /
iterative-scan settings are made once per connection and value, never trusted across a rollback."""
from __future__ import annotations

import contextlib
import uuid

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from atoms.extract import Source
from atoms.selectors import HNSW_SESSION_ATTR, AtomFilters, vector_candidates
from atoms.services import _store_embeddings, atom_delete, atom_ingest

MODEL = "all-MiniLM-L6-v2"  # an indexed model (migrations 0002/0005)
INDEX = "atom_hnsw_all_minilm_l6_v2"


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 384)).astype(np.float32)  # (n, 384) float32
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def vectors(alpha):
    """12 atoms of alpha's, tagged, with known random unit vectors; returns (tag, ids, vectors)."""
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex[:8]
    ids = [atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(f"vector atom {i} {tag}".encode(), f"{i}.txt"),
                       metadata={"tag": tag}).root.pk for i in range(12)]
    vecs = _unit(np.random.default_rng(5), len(ids))
    _store_embeddings(ids, vecs, MODEL)
    return tag, ids, vecs


def _show(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_it_returns_exact_cosines_nearest_first(vectors):
    tag, ids, vecs = vectors
    query = vecs[3] + 0.05 * _unit(np.random.default_rng(9), 1)[0]
    hits = vector_candidates(vector=query, model=MODEL, k=5, filters=AtomFilters(metadata={"tag": tag}))
    exact = vecs @ query / np.linalg.norm(query)  # (12,) float32 cosines
    assert [i for i, _ in hits] == [ids[j] for j in np.argsort(-exact)[:5]]
    assert hits[0][0] == ids[3]
    for atom_id, score in hits:  # float32-exact, not the index's half precision
        assert score == pytest.approx(float(exact[ids.index(atom_id)]), abs=1e-6)


@pytest.mark.django_db
def test_it_plans_the_halfvec_index(vectors):
    tag, ids, vecs = vectors
    plans: list[str] = []

    def explain(execute, sql, params, many, context):
        if "atoms_atomembedding" in sql:
            context["cursor"].cursor.execute("EXPLAIN " + sql, params)
            plans.extend(row[0] for row in context["cursor"].cursor.fetchall())
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:  # a dozen rows: a sort would be cheaper; ask whether the index CAN serve
        cursor.execute("SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
    with connection.execute_wrapper(explain):
        vector_candidates(vector=vecs[0], model=MODEL, k=3, filters=AtomFilters())
    plan = "\n".join(plans)
    assert f"Index Scan using {INDEX}" in plan and "::halfvec(384)" in plan, plan


@pytest.mark.django_db
def test_it_never_returns_a_soft_deleted_atom(vectors):
    from atoms.models import Atom

    tag, ids, vecs = vectors
    atom_delete(atom=Atom.objects.get(pk=ids[7]))
    hits = vector_candidates(vector=vecs[7], model=MODEL, k=12, filters=AtomFilters(metadata={"tag": tag}))
    assert ids[7] not in [i for i, _ in hits]
    assert len(hits) == 11


@pytest.mark.django_db
def test_another_tenant_gets_none_of_our_vectors(vectors, beta):
    tag, ids, vecs = vectors
    connection.set_tenant(beta.tenant)
    hits = vector_candidates(vector=vecs[0], model=MODEL, k=10, filters=AtomFilters(metadata={"tag": tag}))
    assert hits == []
    assert not set(ids) & {i for i, _ in vector_candidates(vector=vecs[0], model=MODEL, k=50, filters=AtomFilters())}


def test_it_sets_hnsw_settings_once_per_connection_and_value(alpha, committed):
    connection.set_tenant(alpha.tenant)
    query = _unit(np.random.default_rng(1), 1)[0]

    def search(ef: int) -> None:
        vector_candidates(vector=query, model=MODEL, k=5, filters=AtomFilters(), ef_search=ef)

    search(57)
    assert (_show("hnsw.ef_search"), _show("hnsw.iterative_scan")) == ("57", "relaxed_order")
    with CaptureQueriesContext(connection) as queries:
        search(57)
    assert len(queries) == 1, [q["sql"][:80] for q in queries]  # settled: the search alone
    search(58)
    assert _show("hnsw.ef_search") == "58"
    # in a transaction the setting is LOCAL: a rollback cannot leave the remembered value wrong
    with contextlib.suppress(RuntimeError), transaction.atomic():
        search(99)
        assert _show("hnsw.ef_search") == "99"
        raise RuntimeError("roll back")
    assert _show("hnsw.ef_search") == "58" and getattr(connection.connection, HNSW_SESSION_ATTR) == 58
    # whichever connection comes next (new, or this one back from the pool), what it remembers is
    # what its session has, and a search gets its own value
    connection.close()
    connection.ensure_connection()
    remembered = getattr(connection.connection, HNSW_SESSION_ATTR, None)
    assert remembered is None or str(remembered) == _show("hnsw.ef_search")
    search(61)
    assert _show("hnsw.ef_search") == "61"
