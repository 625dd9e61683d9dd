"""The boredom signal reads the AtomicStream: token ids of the tenant's recent generation runs."""
import pytest
from django.db import connection

from autonomy.signals_analyze import boredom
from provenance.atomicstream import (
    StepRecord,
    generation_run_close,
    generation_run_open,
    generation_steps_append,
)

pytestmark = pytest.mark.django_db


def _run(tenant, tokens: list[int]) -> None:
    run = generation_run_open(tenant=tenant, model_id=1, model_name="m", model_digest="0" * 64, params={}, seed=1,
                              context_tokens=[1, 2], sources=[])
    generation_steps_append(tenant=tenant, run=run, steps=[StepRecord(i, t, "x", -1.0) for i, t in enumerate(tokens)])
    generation_run_close(tenant=tenant, run=run, status="completed", finish_reason="length", text="",
                         masses={}, top_steps={}, ttft_ms=1.0, duration_ms=2.0)


def test_repetitive_generations_are_boring_and_only_to_their_tenant(alpha, beta):
    connection.set_tenant(alpha.tenant)
    assert boredom(alpha.tenant) == (0.0, {"generations": 0})
    _run(alpha.tenant, [5, 6, 7] * 20)
    looping, info = boredom(alpha.tenant)
    _run(alpha.tenant, list(range(100, 160)))
    mixed, _ = boredom(alpha.tenant)
    assert info["generations"] == 1 and looping > 0.5 and mixed < looping
    connection.set_tenant(beta.tenant)
    assert boredom(beta.tenant)[1]["generations"] == 0
