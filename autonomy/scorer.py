"""The ranking model (the seed's PREDICT): ridge regression from action features to the gain actions
of that kind actually achieved for this tenant. Trained with NumPy in closed form on the tenant's
ActionOutcome rows; inference is a dot product run by `native.scores`. With fewer than
MIN_SAMPLES outcomes the rules decide: expected gain discounted by risk."""
from __future__ import annotations

import numpy as np
from django.utils import timezone

from .executors import EXECUTORS

MIN_SAMPLES = 3
RIDGE_LAMBDA = 0.1
EXECUTOR_NAMES = sorted(EXECUTORS)


def features(*, executor: str, expected_gain: float, risk: float) -> list[float]:
    """[bias, one-hot executor..., expected_gain, risk]"""
    onehot = [1.0 if executor == name else 0.0 for name in EXECUTOR_NAMES]
    return [1.0, *onehot, float(expected_gain), float(risk)]


def rule_score(*, expected_gain: float, risk: float) -> float:
    return float(expected_gain) * (1.0 - float(risk))


def fit(x: np.ndarray, y: np.ndarray, lam: float = RIDGE_LAMBDA) -> np.ndarray:
    """x: (N, F) float64, y: (N,) -> w: (F,) minimising |xw - y|^2 + lam |w|^2 (bias included)."""
    gram = x.T @ x + lam * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y)


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """w: (F,), x: (N, F) -> (N,) float32 predicted gains."""
    import native

    return np.asarray(native.scores(w.astype(np.float32), x.astype(np.float32), metric="dot"))


def scorer_train():
    """Refit the tenant's scorer on all its outcomes (runs in the tenant's schema)."""
    from .models import ActionOutcome, ScorerState

    rows = list(ActionOutcome.objects.values_list("features", "observed_gain"))
    state, _ = ScorerState.objects.get_or_create(singleton=1)
    width = len(features(executor="", expected_gain=0, risk=0))
    rows = [(f, g) for f, g in rows if len(f) == width]
    state.samples = len(rows)
    if len(rows) >= MIN_SAMPLES:
        x = np.array([f for f, _ in rows], dtype=np.float64)  # (N, F)
        y = np.array([g for _, g in rows], dtype=np.float64)  # (N,)
        w = fit(x, y)
        state.weights = [float(v) for v in w]
        state.train_error = float(np.sqrt(np.mean((x @ w - y) ** 2)))
    else:
        state.weights, state.train_error = [], None
    state.trained_at = timezone.now()
    state.save()
    return state


def rank(candidates: list[dict]) -> list[dict]:
    """Set `score` on each candidate ({executor, expected_gain, risk, ...}) and sort best first."""
    from .models import ScorerState

    state = ScorerState.objects.filter(singleton=1).first()
    weights = np.array(state.weights, dtype=np.float64) if state and state.weights else None
    if candidates and weights is not None:
        x = np.array([features(executor=c["executor"], expected_gain=c["expected_gain"], risk=c["risk"])
                      for c in candidates])
        predicted = predict(weights, x)
        for c, gain in zip(candidates, predicted, strict=True):
            c["score"], c["scored_by"] = float(gain) * (1.0 - c["risk"]), "model"
    else:
        for c in candidates:
            c["score"], c["scored_by"] = rule_score(expected_gain=c["expected_gain"], risk=c["risk"]), "rules"
    return sorted(candidates, key=lambda c: -c["score"])
