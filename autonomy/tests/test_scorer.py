import numpy as np
import pytest
from django.db import connection

from autonomy.models import ActionOutcome, CandidateAction, ImprovementRun, ScorerState
from autonomy.scorer import MIN_SAMPLES, features, fit, predict, rank, scorer_train

pytestmark = pytest.mark.django_db


def test_it_fits_a_known_linear_relation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    w = np.array([0.5, -1.0, 2.0, 0.0, 0.25])
    got = fit(x, x @ w, lam=1e-6)
    assert np.allclose(got, w, atol=1e-4)
    assert np.allclose(predict(got, x), x @ w, atol=1e-3)


def _outcome(run, i, executor, observed):
    action = CandidateAction.objects.create(run=run, executor=executor, idempotency_key=f"t{run.pk}-{i}",
                                            expected_gain=0.5, risk=0.1, state="done")
    ActionOutcome.objects.create(action=action, executor=executor, expected_gain=0.5, observed_gain=observed,
                                 success=observed > 0, features=features(executor=executor, expected_gain=0.5, risk=0.1))


def test_it_ranks_by_rules_without_history_and_by_the_model_after_outcomes(alpha):
    connection.set_tenant(alpha.tenant)
    ActionOutcome.objects.all().delete()
    scorer_train()
    candidates = [{"executor": "reembed", "expected_gain": 0.6, "risk": 0.1},
                  {"executor": "api_call", "expected_gain": 0.4, "risk": 0.1}]
    ranked = rank([dict(c) for c in candidates])
    assert ranked[0]["executor"] == "reembed" and ranked[0]["scored_by"] == "rules"
    run = ImprovementRun.objects.create(state="done", phase="done")
    for i in range(3 * MIN_SAMPLES):  # reembed never helped this tenant, api_call always did
        _outcome(run, 2 * i, "reembed", 0.0)
        _outcome(run, 2 * i + 1, "api_call", 1.0)
    state = scorer_train()
    assert state.samples == 6 * MIN_SAMPLES and state.weights
    ranked = rank([dict(c) for c in candidates])
    assert ranked[0]["executor"] == "api_call" and ranked[0]["scored_by"] == "model"


def test_it_keeps_each_tenants_scorer_apart(alpha, beta):
    connection.set_tenant(alpha.tenant)
    run = ImprovementRun.objects.create(state="done", phase="done")
    for i in range(MIN_SAMPLES):
        _outcome(run, i, "query", 1.0)
    scorer_train()
    connection.set_tenant(beta.tenant)
    assert not ScorerState.objects.exclude(weights=[]).exists() or ActionOutcome.objects.exists()
    assert rank([{"executor": "query", "expected_gain": 0.3, "risk": 0.0}])[0]["scored_by"] == "rules"
