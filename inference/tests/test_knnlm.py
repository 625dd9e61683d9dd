"""kNN-LM on the real SmolLM2 file: a datastore built from a text helps predict that text, exclusion of
its group takes the help away, λ=0 is the LM, save/load round-trips, bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest

from inference.runtime import knnlm

TEXT = (
    "The Hartonomous atom store keeps every document as content-addressed atoms. Each atom has a SHA-256 "
    "digest, a modality, a MIME type and its text. Relations link atoms into documents, and embeddings "
    "place them in a vector space for hybrid search, which fuses dense, full-text and trigram rankings."
)
OTHER = "Bananas are yellow when ripe. Apples can be red or green, and grapes grow in bunches on vines."


@pytest.fixture(scope="module")
def ids(tok):
    return tok.encode(TEXT)


@pytest.fixture(scope="module")
def store(model, tok, ids):
    return knnlm.datastore_build(model, [ids, tok.encode(OTHER)], groups=[7, 2], window=64, stride=48)


@pytest.fixture(scope="module")
def scored(model, ids):
    return model.forward(ids, model.new_cache(), all_positions=True)


def _nll(logprobs: np.ndarray, ids: list[int]) -> float:
    targets = np.asarray(ids[1:])
    return float(-logprobs[np.arange(len(targets)), targets].mean())


def test_it_has_one_entry_per_position_with_a_next_token_sorted_by_group(store, ids, tok):
    assert len(store) == len(ids) - 1 + len(tok.encode(OTHER)) - 1
    assert store.keys.dtype == np.float16 and np.allclose(np.linalg.norm(store.keys.astype(np.float32), axis=1), 1, atol=1e-2)
    assert list(np.unique(store.groups)) == [2, 7] and (np.diff(store.groups) >= 0).all()
    lo, hi = store.group_slice(7)
    assert list(store.values[lo:hi]) == ids[1:]


def test_it_makes_the_datastore_text_more_likely_when_interpolated(store, scored, ids):
    knn = knnlm.knn_logprobs(store, scored.hidden[:-1], k=8, temperature=0.1)
    assert _nll(knnlm.interpolate(scored.logits[:-1], knn, 0.3), ids) < 0.6 * _nll(knnlm.log_softmax(scored.logits[:-1]), ids)


def test_it_removes_the_excluded_groups_neighbours(store, scored):
    lo, hi = store.group_slice(7)
    q = knnlm.context_keys(scored.hidden, store.norm_weight, store.eps)
    idx, _ = knnlm.neighbours(store, q, 8, exclude_group=7)
    assert not ((idx >= lo) & (idx < hi)).any() and idx.shape[1] == 8
    idx_all, sc_all = knnlm.neighbours(store, q, 1)
    assert ((idx_all[:, 0] >= lo) & (idx_all[:, 0] < hi)).mean() > 0.9  # a text's own positions are nearest
    assert np.allclose(sc_all[:48, 0], 1.0, atol=2e-2)  # same context as in the first window: same key


def test_it_equals_the_lm_at_lambda_zero_and_the_knn_at_one(store, scored):
    knn = knnlm.knn_logprobs(store, scored.hidden, k=4, temperature=0.5, exclude_group=7)
    lm = knnlm.log_softmax(scored.logits)
    np.testing.assert_allclose(knnlm.interpolate(scored.logits, knn, 0.0), lm, rtol=0, atol=1e-6)
    assert np.array_equal(knnlm.interpolate(lm, knn, 1.0), knn)
    probs = np.exp(knn)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and (np.isfinite(knn).sum(1) <= 4).all()


def test_it_is_minus_inf_safe_when_nothing_is_searchable(model, tok, scored):
    lonely = knnlm.datastore_build(model, [tok.encode(OTHER)], groups=[1])
    knn = knnlm.knn_logprobs(lonely, scored.hidden[0], k=4, temperature=1.0, exclude_group=1)
    assert knn.shape == (model.config.vocab,) and np.isneginf(knn).all()
    mixed = knnlm.interpolate(scored.logits[0], knn, 0.25)
    np.testing.assert_allclose(mixed, knnlm.log_softmax(scored.logits[0]) + np.log(0.75), atol=1e-5)


def test_it_round_trips_through_save_and_load(store):
    back = knnlm.load(knnlm.save(store))
    for name in ("keys", "values", "groups", "norm_weight"):
        assert np.array_equal(getattr(back, name), getattr(store, name))
    assert (back.eps, back.vocab) == (store.eps, store.vocab)


def test_adaptive_lambda_trusts_close_matches_and_ignores_far_ones(store, scored, ids, tok):
    lm = knnlm.log_softmax(scored.logits[:-1])
    own = knnlm.knn_interpolate(store, scored.logits[:-1], scored.hidden[:-1], lam=0.9, k=8, temperature=0.01,
                                adaptive=(0.97, 0.02))
    assert _nll(own, ids) < 0.5 * _nll(lm, ids)  # its own text is in the store: cosine ~1, λ_t ~ 0.9 * 0.82
    _, top = knnlm.knn_search(store, scored.hidden[:-1], k=8, temperature=0.01, exclude_group=7)
    assert top[1:].max() < 0.9  # only the unrelated text is left (position 0 has seen one token: alike anywhere)
    far = knnlm.knn_interpolate(store, scored.logits[1:-1], scored.hidden[1:-1], lam=0.9, k=8, temperature=0.01,
                                adaptive=(0.97, 0.02), exclude_group=7)
    assert abs(_nll(far, ids[1:]) - _nll(lm[1:], ids[1:])) < 0.02  # λ_t = 0.9 * sigmoid(<= -3.5) < 0.03: ~ the LM
    lam_t = knnlm.adaptive_lambda(np.array([1.0, 0.97, 0.5]), 0.9, 0.97, 0.02)
    np.testing.assert_allclose(lam_t, [0.9 / (1 + np.exp(-1.5)), 0.45, 0.0], atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda s, m, h: knnlm.knn_logprobs(s, h, k=0, temperature=1.0),
    lambda s, m, h: knnlm.knn_logprobs(s, h, k=4, temperature=0.0),
    lambda s, m, h: knnlm.knn_logprobs(s, h[:, :10], k=4, temperature=1.0),
    lambda s, m, h: knnlm.knn_logprobs(s, np.full_like(h, np.nan), k=4, temperature=1.0),
    lambda s, m, h: knnlm.interpolate(np.zeros(5), np.zeros(5), 1.5),
    lambda s, m, h: knnlm.interpolate(np.zeros(5), np.zeros(6), 0.5),
    lambda s, m, h: knnlm.interpolate(np.zeros((2, 5)), np.zeros((2, 5)), np.array([0.5, 1.5])),
    lambda s, m, h: knnlm.interpolate(np.zeros((2, 5)), np.zeros((2, 5)), np.array([0.5, 0.5, 0.5])),
    lambda s, m, h: knnlm.adaptive_lambda(np.ones(3), 1.0, 0.9, 0.02),
    lambda s, m, h: knnlm.adaptive_lambda(np.ones(3), 0.5, 0.9, 0.0),
    lambda s, m, h: knnlm.datastore_build(m, [[1, 2, 3]], window=1),
    lambda s, m, h: knnlm.datastore_build(m, [[1, 2, 3]], window=8, stride=9),
    lambda s, m, h: knnlm.datastore_build(m, [[1, 2, 3]], groups=[1, 2]),
    lambda s, m, h: knnlm.load(b"not an npz"),
    lambda s, m, h: knnlm.Datastore(s.keys.astype(np.float32), s.values, s.groups, s.norm_weight, s.eps, s.vocab),
    lambda s, m, h: knnlm.Datastore(s.keys, s.values, s.groups[::-1].copy(), s.norm_weight, s.eps, s.vocab),
    lambda s, m, h: knnlm.Datastore(s.keys, s.values + s.vocab, s.groups, s.norm_weight, s.eps, s.vocab),
])
def test_it_refuses_bad_input(store, model, scored, call):
    with pytest.raises(ValueError):
        call(store, model, scored.hidden)
