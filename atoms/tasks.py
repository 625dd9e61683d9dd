"""Atom tasks: thin wrappers that run a service inside the tenant's schema."""
from __future__ import annotations

from celery import shared_task
from django_tenants.utils import schema_context

from hartonomous.progress import Progress


@shared_task(name="atoms.embed", acks_late=True, autoretry_for=(ConnectionError, TimeoutError),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def embed_atoms_task(schema: str, atom_ids: list[int]) -> dict:
    from .embedding import text_provider
    from .services import embed_atoms, near_duplicates_link

    with schema_context(schema), Progress(schema, "embed", total=len(atom_ids), bar=False) as progress:
        embedded = embed_atoms(atom_ids=atom_ids)
        progress.advance(len(atom_ids))
        linked = near_duplicates_link(atom_ids=atom_ids, model=text_provider().name) if embedded else 0
    return {"embedded": embedded, "near_duplicates": linked}


@shared_task(name="atoms.index_text", acks_late=True, autoretry_for=(ConnectionError, TimeoutError),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def index_text_task(schema: str, atom_ids: list[int]) -> dict:
    """Full-text/trigram indexing of atoms a bulk ingest stored with it deferred (atoms.bulk)."""
    from .bulk import atoms_index_text

    with schema_context(schema):
        return {"indexed": atoms_index_text(atom_ids=atom_ids)}


@shared_task(name="atoms.index_missing", acks_late=True)
def index_missing_task() -> dict:
    """Beat: in every tenant, queue text indexing for atoms still without it (e.g. after a broker outage)."""
    from django_tenants.utils import get_public_schema_name, get_tenant_model

    from .bulk import _enqueue_text_index, atoms_text_unindexed

    queued = {}
    for schema in get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).values_list(
            "schema_name", flat=True):
        with schema_context(schema):
            ids = atoms_text_unindexed()
        if ids:
            _enqueue_text_index(schema, ids)
            queued[schema] = len(ids)
    return queued


@shared_task(name="atoms.embed_missing", acks_late=True)
def embed_missing_task() -> dict:
    """Beat: in every tenant, queue embedding for text atoms that have none (e.g. after a broker outage)."""
    from django_tenants.utils import get_public_schema_name, get_tenant_model

    from .embedding import text_provider_name
    from .services import _enqueue_embedding, atoms_missing_embeddings

    model, queued = text_provider_name(), {}
    if model is None:
        return queued
    for schema in get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).values_list(
            "schema_name", flat=True):
        with schema_context(schema):
            ids = atoms_missing_embeddings(model=model)
        if ids:
            _enqueue_embedding(schema, ids)
            queued[schema] = len(ids)
    return queued


@shared_task(name="atoms.gc_blobs", acks_late=True)
def gc_blobs_task() -> dict:
    from .services import blobs_collect_garbage

    return {"deleted": len(blobs_collect_garbage())}
