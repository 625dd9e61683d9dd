"""The bulk text path: dedup, history and edges written by SQL, all or nothing."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection

from atoms.bulk import atom_ingest_texts
from atoms.extract import Source
from atoms.models import Atom, AtomRelation
from atoms.services import atom_ingest
from hartonomous.errors import ValidationFailed

pytestmark = pytest.mark.django_db


def test_it_inserts_dedups_and_records_history_and_edges(alpha):
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex
    parent = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(f"stream {tag}".encode(), "s.txt")).root
    texts = [f"reading {i} {tag}" for i in range(500)]
    first = atom_ingest_texts(tenant=alpha.tenant, texts=texts + texts[:10], parent_id=parent.pk)
    assert len(first.new_ids) == 500
    again = atom_ingest_texts(tenant=alpha.tenant, texts=texts, parent_id=parent.pk)
    assert again.new_ids == [] and again.existing == 500
    assert Atom.history.filter(id__in=first.new_ids, history_type="+").count() == 500
    assert AtomRelation.objects.filter(target=parent, relation="PART_OF").count() == 500
    assert AtomRelation.history.filter(target_id=parent.pk).count() == 500
    found = Atom.objects.get(id=first.new_ids[7])
    assert found.text == texts[7] and bytes(found.content) == texts[7].encode()
    by_id = dict(Atom.objects.filter(id__in=first.new_ids).values_list("id", "text"))
    assert [by_id[i] for i in first.new_ids] == texts  # new_ids follow the input order


def test_a_bad_item_stores_nothing(alpha):
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex
    before = Atom.objects.count()
    with pytest.raises(ValidationFailed):
        atom_ingest_texts(tenant=alpha.tenant, texts=[f"ok {tag}", "", f"fine {tag}"])
    assert Atom.objects.count() == before
