import numpy as np
import pytest
from django.db import connection

from atoms.extract import Source
from atoms.services import atom_ingest
from concepts.analytics import (
    analytics_attention,
    analytics_causal,
    analytics_membership_proof,
    analytics_repetition,
    analytics_variance,
)
from concepts.models import AnalyticsResult, Concept
from concepts.services import concepts_discover
from hartonomous.errors import NotFound, Unprocessable

from .helpers import blobs, make_atoms

pytestmark = pytest.mark.django_db


def _sensor_csv(tenant, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = np.zeros(n)
    y[2:] = 0.9 * x[:-2]  # y follows x two steps later
    y += rng.standard_normal(n) * 0.1
    lines = ["timestamp,x,y"] + [f"{1700000000 + i},{x[i]:.6f},{y[i]:.6f}" for i in range(n)]
    source = Source.from_bytes("\n".join(lines).encode(), f"s{seed}.csv")
    return atom_ingest(tenant=tenant, source=source).root, x, y


def test_it_computes_the_variance_of_a_sensor_series(alpha):
    connection.set_tenant(alpha.tenant)
    root, x, _ = _sensor_csv(alpha.tenant)
    result = analytics_variance(tenant=alpha.tenant, source_id=root.pk, field="x")
    assert result.result["count"] == 200
    assert result.result["mean"] == pytest.approx(x.mean(), abs=1e-5)
    assert result.result["variance"] == pytest.approx(x.var(), rel=1e-4)
    assert AnalyticsResult.objects.filter(kind="variance").count() == 1
    with pytest.raises(Unprocessable):
        analytics_variance(tenant=alpha.tenant, source_id=root.pk, field="nope")


def test_it_finds_which_series_leads(alpha):
    connection.set_tenant(alpha.tenant)
    root, _, _ = _sensor_csv(alpha.tenant)
    result = analytics_causal(tenant=alpha.tenant, x_source=root.pk, x_field="x", y_source=root.pk, y_field="y",
                              lag=2, max_lag=4).result
    assert result["x_causes_y"]["p"] < 1e-6 and result["y_causes_x"]["p"] > 0.01
    assert result["best_lag"] == 2 and result["best_xcorr"] > 0.9
    with pytest.raises(Unprocessable):
        analytics_causal(tenant=alpha.tenant, x_source=root.pk, x_field="x", y_source=root.pk, y_field="y",
                         lag=90)


def test_it_scores_repetition_of_a_generation(alpha):
    connection.set_tenant(alpha.tenant)
    boring = analytics_repetition(tenant=alpha.tenant, text="the cat sat. " * 20).result
    fresh = analytics_repetition(tenant=alpha.tenant, text="a quick brown fox jumps over the lazy dog today").result
    assert boring["repetition_rate"] > 0.8 and fresh["repetition_rate"] == 0.0
    assert boring["boredom"] > fresh["boredom"]
    with pytest.raises(NotFound):
        analytics_repetition(tenant=alpha.tenant, atom_id=10**9)


def test_it_attends_and_proves_membership_within_a_concept(alpha):
    connection.set_tenant(alpha.tenant)
    atoms = make_atoms(blobs(10, 2, seed=4)[0])
    concepts_discover(tenant=alpha.tenant)
    concept = Concept.objects.get(atom__relations_in__source=atoms[0])
    att = analytics_attention(tenant=alpha.tenant, concept=concept, query_atom_id=atoms[0].pk).result
    members = {a.pk for a in atoms if Concept.objects.filter(pk=concept.pk, atom__relations_in__source=a).exists()}
    assert att["members"] == 10 and {t["atom"] for t in att["top"]} == members
    assert sum(t["mass"] for t in att["top"]) == pytest.approx(1.0, abs=1e-5)
    proof = analytics_membership_proof(tenant=alpha.tenant, concept=concept, atom_id=atoms[3].pk).result
    assert proof["leaves"] == 10 and len(proof["root"]) == 64
    with pytest.raises(NotFound):
        analytics_membership_proof(tenant=alpha.tenant, concept=concept, atom_id=atoms[-1].pk)


def test_it_shows_another_tenant_no_results(alpha, beta):
    connection.set_tenant(alpha.tenant)
    root, _, _ = _sensor_csv(alpha.tenant, seed=5)
    analytics_variance(tenant=alpha.tenant, source_id=root.pk, field="x")
    connection.set_tenant(beta.tenant)
    assert AnalyticsResult.objects.count() == 0
    with pytest.raises(NotFound):
        analytics_variance(tenant=beta.tenant, source_id=root.pk, field="x")
