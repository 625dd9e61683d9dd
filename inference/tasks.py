"""Inference tasks: model files that arrive through the atom store become models."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from celery import shared_task
from django_tenants.utils import schema_context


@contextlib.contextmanager
def _blob_as_file(sha256: str, suffix: str):
    """A path to the blob's bytes: the file itself on the filesystem store, a temp copy from S3."""
    from atoms.storage import blobstore

    store = blobstore()
    with tempfile.TemporaryDirectory(prefix="model-atom-") as folder:
        path = Path(folder) / f"model{suffix}"  # readers tell formats apart by magic and suffix
        if hasattr(store, "path"):
            os.symlink(store.path(sha256), path)
        else:
            with open(path, "wb") as out, store.open(sha256) as blob:
                shutil.copyfileobj(blob, out, 1 << 20)
        yield path


@shared_task(name="inference.ingest_model_atom", acks_late=True, autoretry_for=(ConnectionError,),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def ingest_model_atom_task(schema: str, atom_id: int) -> dict:
    """Run model ingestion on a model file stored as an atom (its blob, never the original path)."""
    from atoms.models import Atom
    from tenants.models import Tenant

    from .services import model_ingest

    tenant = Tenant.objects.get(schema_name=schema)
    with schema_context(schema):
        atom = Atom.objects.get(pk=atom_id)
        suffix = "." + atom.metadata.get("format", "gguf")
        with _blob_as_file(atom.sha256, suffix) as path:
            result = model_ingest(tenant=tenant, path=path, name=atom.metadata.get("name"))
    return {"model": result.model.pk, "created": result.created}


def on_model_file(sender, tenant=None, schema=None, atom=None, **kwargs) -> None:
    """atoms.signals.model_file_ingested → queue the model ingestion (never fails the ingest)."""
    import logging

    try:
        ingest_model_atom_task.delay(schema, atom.pk)
    except Exception as exc:  # broker down: the file is stored; `manage.py ingest_model` can redo it
        logging.getLogger(__name__).warning("model ingestion not queued: %s", exc)


@shared_task(name="inference.knn_build", acks_late=True, autoretry_for=(ConnectionError,),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def knn_build_task(schema: str, model_id: int, max_atoms: int = 5000, max_tokens: int = 200_000,
                   metadata: dict | None = None) -> dict:
    """Build a model's kNN-LM datastore over the tenant's text atoms (POST /api/models/{id}/knn)."""
    from tenants.models import Tenant

    from .knn import knn_datastore_build
    from .models import Model

    tenant = Tenant.objects.get(schema_name=schema)
    with schema_context(schema):
        model = Model.objects.select_related("root").get(pk=model_id)
        atom = knn_datastore_build(tenant=tenant, model=model, max_atoms=max_atoms, max_tokens=max_tokens,
                                   metadata=metadata)
        return {"datastore": atom.pk, **atom.metadata}


def knn_build_enqueue(*, tenant, model, max_atoms: int, max_tokens: int, metadata: dict | None = None) -> str:
    """Queue knn_build_task after the request's transaction commits; the task id, chosen now."""
    import uuid

    from django.db import transaction

    task_id = uuid.uuid4().hex
    args = (tenant.schema_name, model.pk, max_atoms, max_tokens, metadata or None)
    transaction.on_commit(lambda: knn_build_task.apply_async(args, task_id=task_id))
    return task_id
