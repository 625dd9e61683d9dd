"""Deferred text indexing of the bulk path: stored at once, searchable by text once `atoms.index_text` ran."""
from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection, transaction

from atoms.bulk import DEFER_ABOVE, atom_ingest_texts, atoms_text_unindexed
from atoms.models import Atom
from atoms.selectors import AtomFilters, fulltext_candidates, trigram_candidates
from atoms.tasks import index_missing_task, index_text_task


def _found(tag: str) -> tuple[set[int], set[int]]:
    """Atom ids that full-text and trigram search find for `tag` (a word no other test uses)."""
    full = {i for i, _ in fulltext_candidates(query=tag, k=100, filters=AtomFilters())}
    tri = {i for i, _ in trigram_candidates(query=tag, k=100, filters=AtomFilters())}
    return full, tri


def _texts(tag: str, n: int) -> list[str]:
    return [f"pump {i} pressure nominal {tag}" for i in range(n)]


@pytest.mark.django_db
def test_deferred_atoms_are_found_once_the_index_task_ran_and_only_by_their_tenant(alpha, beta,
                                                                                   django_capture_on_commit_callbacks):
    connection.set_tenant(alpha.tenant)
    tag = "q" + uuid.uuid4().hex[:12]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = atom_ingest_texts(tenant=alpha.tenant, texts=_texts(tag, 40), defer_text_index=True)
    ids = set(result.new_ids)
    assert len(ids) == 40
    assert any(getattr(cb, "__code__", None) and "_enqueue_text_index" in cb.__code__.co_names for cb in callbacks)
    atom = Atom.objects.get(pk=min(ids))
    assert atom.text.endswith(tag)  # stored and readable at once
    assert _found(tag) == (set(), set())  # not yet searchable by text
    assert ids <= set(atoms_text_unindexed())
    assert index_missing_task()[alpha.tenant.schema_name] >= 40  # the sweep finds them (and queues them)

    assert index_text_task(alpha.tenant.schema_name, sorted(ids)) == {"indexed": 40}
    full, tri = _found(tag)
    assert full == ids and tri == ids
    assert not ids & set(atoms_text_unindexed())
    assert index_text_task(alpha.tenant.schema_name, sorted(ids)) == {"indexed": 0}  # idempotent

    connection.set_tenant(beta.tenant)
    assert _found(tag) == (set(), set())
    assert index_text_task(beta.tenant.schema_name, sorted(ids)) == {"indexed": 0}


@pytest.mark.django_db
def test_small_batches_and_the_orm_path_are_indexed_in_the_insert(alpha):
    connection.set_tenant(alpha.tenant)
    tag = "s" + uuid.uuid4().hex[:12]
    small = atom_ingest_texts(tenant=alpha.tenant, texts=_texts(tag, 5))
    assert _found(tag) == (set(small.new_ids), set(small.new_ids))

    tag2 = "o" + uuid.uuid4().hex[:12]
    with transaction.atomic():  # deferral ends with the bulk call, not with the enclosing transaction
        atom_ingest_texts(tenant=alpha.tenant, texts=_texts(tag2, 3), defer_text_index=True)
        orm = Atom.objects.create(sha256=uuid.uuid4().hex * 2, modality="text", mime="text/plain", size=9,
                                  text=f"orm atom {tag2}")
    full, _ = _found(tag2)
    assert full == {orm.pk}
    Atom.objects.filter(pk=orm.pk).update(text="renamed entirely")  # the trigger follows text changes
    assert _found(tag2)[0] == set()


@pytest.mark.django_db
def test_the_default_defers_only_large_batches(alpha):
    connection.set_tenant(alpha.tenant)
    tag = "l" + uuid.uuid4().hex[:12]
    result = atom_ingest_texts(tenant=alpha.tenant, texts=_texts(tag, DEFER_ABOVE + 1))
    assert _found(tag)[0] == set()
    assert Atom.objects.filter(pk__in=result.new_ids, search_vector__isnull=True).count() == DEFER_ABOVE + 1


@pytest.mark.live
def test_the_worker_indexes_a_committed_bulk_ingest(celery_worker, alpha, beta, committed):
    connection.set_tenant(alpha.tenant)
    tag = "w" + uuid.uuid4().hex[:12]
    ids = set(atom_ingest_texts(tenant=alpha.tenant, texts=_texts(tag, 12), defer_text_index=True).new_ids)
    deadline = time.monotonic() + 90
    while _found(tag)[0] != ids:
        assert time.monotonic() < deadline, "the worker did not index the atoms within 90 s"
        time.sleep(0.5)
    assert _found(tag)[1] == ids
    connection.set_tenant(beta.tenant)
    assert _found(tag) == (set(), set())
