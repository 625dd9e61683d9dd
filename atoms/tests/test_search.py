"""Hybrid search over real MiniLM embeddings in the tenant's schema."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.db import connection

from atoms.embedding import text_provider
from atoms.extract import Source
from atoms.search import SearchQuery, atom_search
from atoms.selectors import AtomFilters
from atoms.services import atom_ingest, embed_atoms, near_duplicates_link
from hartonomous.errors import ValidationFailed

pytestmark = pytest.mark.django_db

DOCS = {
    "cats": "Cats are small domesticated felines that purr and chase mice.",
    "postgres": "PostgreSQL is a relational database with indexes, transactions and extensions.",
    "rockets": "Rockets burn propellant to produce thrust and reach orbit around the Earth.",
    "bread": "Bread is baked from flour, water, yeast and salt in a hot oven.",
    "violin": "The violin is a string instrument played with a bow.",
}


@pytest.fixture
def corpus(alpha):
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex[:8]
    ids, new = {}, []
    for name, text in DOCS.items():
        result = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(f"{text} [{tag}]".encode(), f"{name}.txt"),
                             metadata={"topic": name, "tag": tag})
        ids[name] = result.root.pk
        new += result.new_ids
    code = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(
        f"def bake_bread(flour, water):\n    return flour + water  # {tag}\n".encode(), "bake.py"))
    ids["code"] = code.root.pk
    new += code.new_ids
    embed_atoms(atom_ids=new)
    return tag, ids


def test_it_finds_by_meaning(corpus):
    tag, ids = corpus
    hits = atom_search(SearchQuery(text="a database for storing tables", k=3,
                                   filters=AtomFilters(metadata={"tag": tag})))
    assert hits[0].atom.pk == ids["postgres"]
    assert "vector" in hits[0].why and hits[0].why["cosine"] > 0.3


def test_it_fuses_keyword_hits(corpus):
    tag, ids = corpus
    hits = atom_search(SearchQuery(text="propellant thrust", k=3, filters=AtomFilters(metadata={"tag": tag})))
    assert hits[0].atom.pk == ids["rockets"]
    assert {"vector", "fulltext"} <= set(hits[0].why)


def test_filtered_vector_search_loses_nothing(corpus):
    tag, ids = corpus
    hits = atom_search(SearchQuery(text="string instrument music", k=5, weights={"vector": 1.0},
                                   filters=AtomFilters(modality=["code"])))
    assert hits, "a filter that excludes the nearest neighbours must still return the matching atoms"
    assert all(h.atom.modality == "code" for h in hits)
    assert any(tag in (h.atom.text or "") for h in hits)


def test_it_searches_by_atom_and_by_vector(corpus):
    tag, ids = corpus
    from atoms.models import Atom

    by_atom = atom_search(SearchQuery(atom=Atom.objects.get(pk=ids["bread"]), k=3,
                                      filters=AtomFilters(metadata={"tag": tag})))
    assert ids["bread"] not in [h.atom.pk for h in by_atom]
    vector = text_provider().embed_texts(["kittens and cats"])[0]
    by_vector = atom_search(SearchQuery(vector=vector, k=1, filters=AtomFilters(metadata={"tag": tag})))
    assert by_vector[0].atom.pk == ids["cats"]


def test_it_rejects_a_vector_of_the_wrong_dimension(corpus):
    with pytest.raises(ValidationFailed):
        atom_search(SearchQuery(vector=np.ones(17, dtype=np.float32), k=3))


def test_it_links_near_duplicates(alpha):
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex[:8]
    a = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(f"The cat sat on the mat. {tag}".encode(), "a.txt"))
    b = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(f"The cat sat on the mat! {tag}".encode(), "b.txt"))
    embed_atoms(atom_ids=[a.root.pk, b.root.pk])
    assert near_duplicates_link(atom_ids=[b.root.pk], model=text_provider().name) >= 1
    assert b.root.relations_out.filter(relation="NEAR_DUPLICATE_OF", target=a.root).exists()


def test_another_tenant_finds_nothing_of_ours(corpus, beta):
    tag, _ = corpus
    connection.set_tenant(beta.tenant)
    hits = atom_search(SearchQuery(text="database", k=10, filters=AtomFilters(metadata={"tag": tag})))
    assert hits == []
