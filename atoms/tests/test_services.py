"""Ingest into the real tenant schema and blob store: dedup, parts and edges, all-or-nothing."""
from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from django.db import connection
from PIL import Image

from atoms.extract import Source
from atoms.models import Atom, AtomEmbedding, AtomRelation
from atoms.services import atom_delete, atom_ingest
from atoms.storage import blobstore
from hartonomous.errors import TooLarge, Unprocessable, ValidationFailed

pytestmark = pytest.mark.django_db

MARKDOWN = """# Atoms

Every atom is content addressed by SHA-256.

## Dedup

The same bytes are the same atom, so ingesting twice adds nothing.

## Search

Hybrid search fuses vector, full-text and trigram hits.
"""


@pytest.fixture
def in_alpha(alpha):
    connection.set_tenant(alpha.tenant)
    return alpha


def _markdown(tag: str) -> Source:
    return Source.from_bytes((MARKDOWN + f"\n<!-- {tag} -->\n").encode(), f"{tag}.md")


def test_it_stores_parts_with_edges_and_dedups(in_alpha):
    tag = uuid.uuid4().hex
    first = atom_ingest(tenant=in_alpha.tenant, source=_markdown(tag))
    assert first.created and first.atoms_new >= 2
    root = first.root
    assert blobstore().exists(root.sha256)
    children = AtomRelation.objects.filter(target=root, relation="PART_OF")
    assert children.count() >= 2
    assert all(edge.source.text for edge in children)
    again = atom_ingest(tenant=in_alpha.tenant, source=_markdown(tag))
    assert not again.created and again.root.pk == root.pk and again.atoms_new == 0


def test_it_absorbs_a_single_chunk_into_its_root(in_alpha):
    text = f"one short line {uuid.uuid4().hex}"
    result = atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(text.encode(), "s.txt"))
    assert result.root.text == text
    assert not AtomRelation.objects.filter(target=result.root).exists()


def _png(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def test_it_embeds_images_at_ingest(in_alpha):
    result = atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(_png((10, 200, 30)), "g.png"))
    embedding = AtomEmbedding.objects.get(atom=result.root)
    assert result.root.modality == "image" and embedding.dim == len(embedding.vector)
    assert np.isclose(np.linalg.norm(np.asarray(embedding.vector)), 1.0, atol=1e-3)
    assert embedding.point is not None


def test_a_failed_ingest_leaves_no_rows_and_no_blob(in_alpha):
    corrupt = _png((1, 2, 3))[:40] + b"garbage" * 10
    before = Atom.objects.count()
    with pytest.raises(Unprocessable):
        atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(corrupt, "broken.png"))
    import hashlib

    assert Atom.objects.count() == before
    assert not blobstore().exists(hashlib.sha256(corrupt).hexdigest())


def test_it_refuses_empty_and_oversized_content(in_alpha):
    with pytest.raises(ValidationFailed):
        atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(b"", "e.txt"))
    with pytest.raises(TooLarge):
        atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(b"x" * 2048, "big.txt"), max_bytes=1024)


def test_it_rejects_text_that_is_not_utf8(in_alpha):
    with pytest.raises(Unprocessable) as raised:
        atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes("café".encode("latin-1") * 50, "l.txt"))
    assert "utf" in raised.value.code.lower() or "utf" in raised.value.message.lower()


def test_a_deleted_atom_comes_back_when_ingested_again(in_alpha):
    source = Source.from_bytes(f"restorable {uuid.uuid4().hex}".encode(), "r.txt")
    atom = atom_ingest(tenant=in_alpha.tenant, source=source).root
    atom_delete(atom=atom)
    assert Atom.history.filter(id=atom.pk, deleted_at__isnull=False).exists()
    again = atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(source.head(), "r.txt"))
    assert again.restored and again.root.pk == atom.pk and again.root.deleted_at is None


def test_another_tenant_has_its_own_store(alpha, beta):
    text = f"tenant private {uuid.uuid4().hex}".encode()
    connection.set_tenant(alpha.tenant)
    sha = atom_ingest(tenant=alpha.tenant, source=Source.from_bytes(text, "p.txt")).root.sha256
    connection.set_tenant(beta.tenant)
    assert not Atom.objects.filter(sha256=sha).exists()
    result = atom_ingest(tenant=beta.tenant, source=Source.from_bytes(text, "p.txt"))
    assert result.created  # the same bytes are a new atom for another tenant


def test_gc_removes_only_blobs_nobody_refers_to(in_alpha):
    from atoms.services import blob_references, blobs_collect_garbage

    kept = atom_ingest(tenant=in_alpha.tenant, source=Source.from_bytes(f"kept {uuid.uuid4().hex}".encode(), "k.txt"))
    orphan = blobstore().put_bytes(f"orphan {uuid.uuid4().hex}".encode())
    assert blob_references()[kept.root.sha256] >= 1
    deleted = blobs_collect_garbage(min_age_seconds=0)
    assert orphan.sha256 in deleted
    assert blobstore().exists(kept.root.sha256) and not blobstore().exists(orphan.sha256)
