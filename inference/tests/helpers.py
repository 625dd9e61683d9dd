"""Helpers shared by the inference tests."""
from __future__ import annotations

from django.db import connection

from atoms.bulk import atom_ingest_texts
from atoms.models import Atom
from atoms.services import embed_atoms


def text_atoms(tenant, texts: list[str], metadata: dict | None = None) -> list[int]:
    """Ingest and embed `texts` in the tenant's schema (left active); their atom ids, in order."""
    connection.set_tenant(tenant)
    ids = atom_ingest_texts(tenant=tenant, texts=texts, metadata=metadata or {}).new_ids
    embed_atoms(atom_ids=ids)
    by_text = dict(Atom.objects.filter(pk__in=ids).values_list("text", "id"))
    return [by_text[t] for t in texts]
