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


@contextlib.contextmanager
def _tracked(task_id: str | None):
    """Record a queued ModelJob's state around the work: running, then finished with the result or
    failed with the reason. Bad input found by the service fails the job for good (no retry); any other
    error is recorded and re-raised so Celery retries or dead-letters it. Yields a dict for the result."""
    from django.utils import timezone

    from hartonomous.errors import ApplicationError

    from .models import JobState, ModelJob

    jobs = ModelJob.objects.filter(task_id=task_id or "")
    jobs.update(state=JobState.RUNNING, error="")
    out: dict = {}
    try:
        yield out
    except ApplicationError as exc:
        jobs.update(state=JobState.FAILED, error=str(exc), finished_at=timezone.now())
        out["error"] = str(exc)
        return
    except Exception as exc:
        jobs.update(state=JobState.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now())
        raise
    jobs.update(state=JobState.FINISHED, result=out, finished_at=timezone.now())


@shared_task(name="inference.knn_build", bind=True, acks_late=True, autoretry_for=(ConnectionError,),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def knn_build_task(self, schema: str, model_id: int, max_atoms: int = 5000, max_tokens: int = 200_000,
                   metadata: dict | None = None) -> dict:
    """Build a model's kNN-LM datastore over the tenant's text atoms (POST /api/models/{id}/knn)."""
    from tenants.models import Tenant

    from .knn import knn_datastore_build
    from .models import Model

    tenant = Tenant.objects.get(schema_name=schema)
    with schema_context(schema), _tracked(self.request.id) as out:
        model = Model.objects.select_related("root").get(pk=model_id)
        atom = knn_datastore_build(tenant=tenant, model=model, max_atoms=max_atoms, max_tokens=max_tokens,
                                   metadata=metadata)
        out.update(datastore=atom.pk, **atom.metadata)
    return out


@shared_task(name="inference.student_extract", bind=True, acks_late=True, autoretry_for=(ConnectionError,),
             retry_backoff=1, retry_backoff_max=16, max_retries=5)
def student_extract_task(self, schema: str, model_id: int, drop: int, max_tokens: int = 64,
                         name: str | None = None, texts: list[str] | None = None) -> dict:
    """Derive a student of a model (POST /api/models/{id}/students); see services.model_student_extract."""
    from tenants.models import Tenant

    from .models import Model
    from .services import model_student_extract

    tenant = Tenant.objects.get(schema_name=schema)
    with schema_context(schema), _tracked(self.request.id) as out:
        parent = Model.objects.select_related("root").get(pk=model_id)
        r = model_student_extract(tenant=tenant, parent=parent, drop=drop, texts=texts, max_tokens=max_tokens,
                                  name=name)
        out.update(student=r.model.pk, created=r.created, dropped=r.dropped,
                   parent_perplexity=r.parent_perplexity, student_perplexity=r.student_perplexity)
    return out


_TASKS = {"knn": knn_build_task, "student": student_extract_task}


def model_job_enqueue(*, tenant, kind: str, model, params: dict):
    """A ModelJob row now and its task queued after the request's transaction commits."""
    import uuid

    from django.db import transaction

    from .models import ModelJob

    job = ModelJob.objects.create(task_id=uuid.uuid4().hex, kind=kind, model=model, params=params)
    transaction.on_commit(lambda: _send(job, tenant.schema_name))
    return job


def _send(job, schema: str) -> None:
    """Queue the job's task; with the broker down the job is failed with the reason (nothing is lost:
    the client sees it and asks again) instead of the request failing after its commit."""
    import logging

    from django.utils import timezone

    from .models import JobState, ModelJob

    try:
        _TASKS[job.kind].apply_async((schema, job.model_id), job.params, task_id=job.task_id)
    except Exception as exc:  # kombu raises its own OperationalError family
        logging.getLogger(__name__).warning("model job %s not queued: %s", job.task_id, exc)
        ModelJob.objects.filter(pk=job.pk).update(state=JobState.FAILED, finished_at=timezone.now(),
                                                  error=f"The job could not be queued ({exc}); ask again.")
