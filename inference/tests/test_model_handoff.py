"""A model file ingested through the atom store is handed to model ingestion (issue 5 → issue 6)."""
from __future__ import annotations

import pytest
from django.db import connection

from atoms.extract import Source
from atoms.services import atom_ingest
from inference.models import Model
from inference.tasks import ingest_model_atom_task
from inference.tests.api_endpoints import write_tiny_gguf

pytestmark = pytest.mark.django_db


def test_a_model_file_atom_becomes_a_model(alpha, beta, tmp_path):
    connection.set_tenant(alpha.tenant)
    path = write_tiny_gguf(tmp_path / "handed.gguf", seed=7)
    root = atom_ingest(tenant=alpha.tenant, source=Source.from_path(path), source_kind="file").root
    assert root.modality == "model"
    outcome = ingest_model_atom_task.apply(args=(alpha.slug, root.pk)).get()
    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=outcome["model"])
    assert outcome["created"] and model.architecture == "llama"
    again = ingest_model_atom_task.apply(args=(alpha.slug, root.pk)).get()
    assert again == {"model": model.pk, "created": False}
    connection.set_tenant(beta.tenant)
    assert not Model.objects.filter(pk=model.pk, source_sha256=model.source_sha256).exists()
