"""Student extraction: drop the least important layers, share the kept tensor atoms with the parent."""
from __future__ import annotations

import numpy as np
import pytest
from django.db import connection

from hartonomous.errors import ValidationFailed
from inference.atom_source import load_runtime, model_manifest
from inference.models import Model, ModelLineage
from inference.selectors import model_unique_bytes, models_unique_bytes
from inference.services import _store_student, model_student_extract, perplexity
from inference.tests.test_models import smol  # noqa: F401 (module fixture)

pytestmark = pytest.mark.django_db
TEXTS = ["The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome."]


def test_it_extracts_a_student_sharing_the_parents_atoms(smol, alpha):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    parent = Model.objects.get(pk=smol.pk)
    result = model_student_extract(tenant=alpha.tenant, parent=parent, drop=2, texts=TEXTS, max_tokens=10)
    student = result.model
    assert result.created and len(result.dropped) == 2 and len(result.importance) == 30
    assert result.dropped == sorted(sorted(result.importance, key=result.importance.get)[:2])
    assert student.hyperparameters["block_count"] == 28 and student.n_tensors == 272 - 2 * 9
    assert student.size_bytes < parent.size_bytes
    assert student.new_bytes == student.root.size < parent.size_bytes // 40  # only its manifest is new
    shared = models_unique_bytes(models=[parent, student])
    assert shared - model_unique_bytes(model=parent) == student.new_bytes
    edge = ModelLineage.objects.get(child=student, parent=parent)
    assert edge.relation == "student_of" and edge.metadata["dropped_layers"] == result.dropped

    loaded = load_runtime(student, n_ctx=64)
    assert loaded.llama.config.n_layer == 28
    tokens = loaded.tokenizer.encode(TEXTS[0])[:10]
    assert np.isclose(perplexity(loaded.llama, tokens), result.student_perplexity, rtol=1e-4)
    assert result.student_perplexity > 1 and result.parent_perplexity > 1
    assert all(v >= -1e-6 for v in result.importance.values())

    keep = [i for i in range(30) if i not in result.dropped]
    again = _store_student(alpha.tenant, parent, model_manifest(parent), keep, result.dropped, result.importance,
                           result.parent_perplexity, result.student_perplexity, None)
    assert not again.created and again.model.pk == student.pk


def test_it_refuses_bad_student_requests(smol, alpha):  # noqa: F811
    connection.set_tenant(alpha.tenant)
    parent = Model.objects.get(pk=smol.pk)
    for drop in (0, 30, "2"):
        with pytest.raises(ValidationFailed):
            model_student_extract(tenant=alpha.tenant, parent=parent, drop=drop, texts=TEXTS)
    assert not ModelLineage.objects.exists()
