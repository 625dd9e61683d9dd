"""Parity of the fast vector/analytics kernels with native/reference.py, and of the reference with
independent implementations (numpy argpartition, scikit-learn, numpy var/cov, hashlib).

Tolerances (float32 kernels accumulate in float32 lanes, the reference in float64):
- scores: |fast - ref| <= 2e-6 * ||q|| * ||row|| * sqrt(D) (cosine: the same with unit norms).
- moments: 1e-12 relative; k-means inertia 1e-5 relative; attention 1e-5; causal 1e-9.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import native
from native import reference as ref
from native import vector as vec

BACKENDS = [
    "c",
    pytest.param("cupy", marks=pytest.mark.skipif(not native.cupy_available(), reason="no CUDA GPU")),
]
DIMS = (1, 3, 17, 384, 385)
ROWS = (1, 7, 1000)


@pytest.fixture(params=BACKENDS)
def fast(request, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", request.param)
    return request.param


@pytest.fixture(params=["reference", *BACKENDS])
def any_backend(request, monkeypatch):
    monkeypatch.setenv("HARTONOMOUS_NATIVE_BACKEND", request.param)
    return request.param


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def score_tol(q, m, metric):
    # q: (Q, D), m: (N, D) -> (Q, N) allowed absolute error
    d = q.shape[1]
    if metric == "cosine":
        return np.full((q.shape[0], m.shape[0]), 2e-6 * np.sqrt(d) + 1e-6)
    qn = np.linalg.norm(q.astype(np.float64), axis=1)[:, None]
    mn = np.linalg.norm(m.astype(np.float64), axis=1)[None, :]
    return 2e-6 * np.sqrt(d) * qn * mn + 1e-6


# ----------------------------------------------------------------------------- scores and top-k


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", ROWS)
def test_it_matches_reference_scores(fast, n, d, metric, dtype):
    m, q = rand((n, d), 1, dtype), rand((5, d), 2)
    got = vec.scores(q, m, metric)
    want = ref.scores(q, m, metric)
    assert got.dtype == np.float32 and got.shape == (5, n)
    assert (np.abs(got - want) <= score_tol(q, m, metric)).all()


def assert_topk_matches(q, m, k, metric, idx, sc):
    want_i, want_s = ref.topk(q, m, k, metric)
    tol = score_tol(q, m, metric)
    kk = min(k, m.shape[0])
    assert idx.shape == sc.shape == (q.shape[0], kk) and idx.dtype == np.int64
    assert (np.diff(sc, axis=1) <= 0).all(), "not sorted best first"
    assert (np.abs(sc - want_s) <= tol[:, :kk]).all(), "k-th best scores differ"
    exact = ref.scores(q, m, metric)
    at = np.take_along_axis(exact, idx, axis=1)
    assert (np.abs(at - sc) <= np.take_along_axis(tol, idx, axis=1)).all(), "scores not of those rows"
    for row in range(q.shape[0]):
        assert len(set(idx[row])) == kk


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", ROWS)
def test_it_matches_reference_topk(fast, n, d, metric, dtype):
    m, q = rand((n, d), 3, dtype), rand((4, d), 4)
    for k in (1, 5, n + 3):
        idx, sc = vec.topk(q, m, k, metric)
        assert_topk_matches(q, m, k, metric, idx, sc)


def test_it_returns_all_rows_sorted_when_k_exceeds_n(fast):
    m, q = rand((7, 17), 5), rand(17, 6)
    idx, sc = vec.topk(q, m, 50, "dot")
    assert sorted(idx.tolist()) == list(range(7))
    np.testing.assert_allclose(sc, np.sort(m.astype(np.float64) @ q)[::-1], rtol=1e-5, atol=1e-5)


def test_it_takes_a_single_query_as_1d(fast):
    m, q = rand((100, 17), 7), rand(17, 8)
    idx, sc = vec.topk(q, m, 3)
    idx2, sc2 = vec.topk(q[None, :], m, 3)
    assert idx.shape == (3,) and (idx == idx2[0]).all() and (sc == sc2[0]).all()
    assert vec.scores(q, m).shape == (100,)


def test_it_breaks_ties_by_lower_index(any_backend):
    row = rand(17, 9)
    m = np.stack([rand(17, 10), row, rand(17, 11), row, row])
    idx, _ = vec.topk(row, m, 3, "cosine")
    assert idx.tolist() == [1, 3, 4]


def test_it_scores_zero_vectors_as_zero_cosine(any_backend):
    m = rand((10, 17), 12)
    m[3] = 0.0
    got = vec.scores(rand(17, 13), m, "cosine")
    assert np.isfinite(got).all() and got[3] == 0.0
    zero_q = vec.scores(np.zeros(17, np.float32), m, "cosine")
    assert (zero_q == 0.0).all()
    idx, sc = vec.topk(np.zeros(17, np.float32), m, 3, "cosine")
    assert idx.tolist() == [0, 1, 2] and (sc == 0).all()


def test_it_runs_avx2_and_scalar_paths_alike():
    from native import _core

    m, q = rand((300, 385), 14), rand((5, 385), 15)
    m16 = m.astype(np.float16)
    fast_s = _core.scores(q, m16, None, True)
    fast_t = _core.topk(q, m, None, False, 9)
    fast_l = _core.lloyd_step(m, m[:4].astype(np.float64))
    try:
        assert _core.set_simd(False) == "scalar"
        np.testing.assert_allclose(_core.scores(q, m16, None, True), fast_s, atol=1e-5)
        slow_t = _core.topk(q, m, None, False, 9)
        assert (slow_t[0] == fast_t[0]).all()
        np.testing.assert_allclose(slow_t[1], fast_t[1], rtol=1e-5, atol=1e-4)
        slow_l = _core.lloyd_step(m, m[:4].astype(np.float64))
        assert (slow_l[0] == fast_l[0]).all()
        np.testing.assert_allclose(slow_l[2], fast_l[2], rtol=1e-12)
    finally:
        _core.set_simd(True)


def test_it_converts_float16_specials_on_both_paths():
    from native import _core

    vals = np.array([0.0, -0.0, 1e-7, -3e-6, 6e-5, 65504.0, -65504.0, 1.0, -2.5, 1e-3], np.float16)
    m = np.stack([np.roll(vals, i) for i in range(10)]).astype(np.float16)  # (10, 10) float16
    q = np.eye(10, dtype=np.float32)  # scores are the matrix columns themselves
    try:
        for simd in (True, False):
            _core.set_simd(simd)
            np.testing.assert_array_equal(_core.scores(q, m, None, False), m.astype(np.float32).T)
    finally:
        _core.set_simd(True)


def test_it_reference_topk_equals_argpartition_selection():
    m, q = rand((1000, 33), 16), rand((3, 33), 17)
    idx, sc = ref.topk(q, m, 10, "dot")
    for row in range(3):
        s = m.astype(np.float64) @ q[row].astype(np.float64)
        part = np.argpartition(-s, 10)[:10]
        part = part[np.argsort(-s[part])]
        assert idx[row].tolist() == part.tolist()
        np.testing.assert_allclose(sc[row], s[part], rtol=1e-6)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_it_rejects_non_finite_input(any_backend, bad):
    m, q = rand((50, 17), 18), rand(17, 19)
    m_bad, q_bad = m.copy(), q.copy()
    m_bad[20, 4] = bad
    q_bad[3] = bad
    for metric in ("cosine", "dot"):
        with pytest.raises(ValueError):
            vec.topk(q, m_bad, 5, metric)
        with pytest.raises(ValueError):
            vec.scores(q, m_bad, metric)
        with pytest.raises(ValueError):
            vec.topk(q_bad, m, 5, metric)
    with pytest.raises(ValueError):
        vec.moments_accumulate(vec.moments_init(17), m_bad)
    with pytest.raises(ValueError):
        vec.kmeans(m_bad, 3)
    with pytest.raises(ValueError):
        vec.attention(q, m_bad, m)
    with pytest.raises(ValueError):
        vec.lagged_xcorr(m_bad[:, 4], m[:, 0], 3)
    with pytest.raises(ValueError):
        vec.quantize_int8(m_bad)


def test_it_rejects_bad_shapes_and_arguments(any_backend):
    m, q = rand((50, 17), 20), rand(17, 21)
    cases = [
        lambda: vec.topk(q, m[0], 5),  # matrix not 2-D
        lambda: vec.topk(q[:5], m, 5),  # dimension mismatch
        lambda: vec.topk(q[None, None], m, 5),  # queries 3-D
        lambda: vec.topk(q, m, 0),  # k <= 0
        lambda: vec.topk(q, m, -2),
        lambda: vec.topk(q, m[:0], 5),  # empty matrix
        lambda: vec.topk(q[:0], m[:, :0], 5),
        lambda: vec.topk(q, m, 5, metric="l2"),
        lambda: vec.topk(q, m.astype(np.int32), 5),
        lambda: vec.topk_int8(q, m.astype(np.int8), np.ones(49, np.float32), 5),
        lambda: vec.moments_accumulate(vec.moments_init(17), m[:, :3]),
        lambda: vec.moments_accumulate(vec.moments_init(17), m[:0]),
        lambda: vec.kmeans(m, 51),
        lambda: vec.kmeans(m, 3, init=np.zeros((2, 17))),
        lambda: vec.attention(q, m, m[:10]),
        lambda: vec.lagged_xcorr(m[:, 0], m[:40, 1], 3),
        lambda: vec.lagged_xcorr(m[:, 0], m[:, 1], 49),
        lambda: vec.granger_f(m[:, 0], m[:, 1], 20),
        lambda: vec.repetition_rate([], 2),
        lambda: vec.repetition_rate([1.5, 2.5], 1),
        lambda: vec.repetition_rate([1, 2], 0),
        lambda: vec.merkle_root([]),
        lambda: vec.merkle_root([b"short"]),
        lambda: vec.merkle_proof([bytes(32)], 1),
    ]
    for i, case in enumerate(cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"case {i} did not raise")


# ----------------------------------------------------------------------------- int8


@pytest.mark.parametrize("d", DIMS)
def test_it_quantizes_int8_like_reference(fast, d):
    m = rand((200, d), 22) * 3
    m[5] = 0.0
    q, s = vec.quantize_int8(m)
    rq, rs = ref.quantize_int8(m)
    np.testing.assert_array_equal(s, rs)
    assert q.dtype == np.int8 and np.abs(q.astype(int) - rq).max() <= 1  # x/scale rounding at .5
    assert (np.abs(ref.dequantize_int8(q, s) - m) <= s[:, None] * 0.5001 + 1e-7).all()


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("d", (3, 17, 385))
def test_it_matches_reference_topk_int8(fast, metric, d):
    m, queries = rand((1000, d), 23), rand((3, d), 24)
    q, s = ref.quantize_int8(m)
    idx, sc = vec.topk_int8(queries, q, s, 7, metric)
    assert_topk_matches(queries, ref.dequantize_int8(q, s), 7, metric, idx, sc)
    idx, sc = vec.topk_int8(queries, q, s, 7, metric, rescore=m, oversample=3)
    want_i, want_s = ref.topk_int8(queries, q, s, 7, metric, rescore=m, oversample=3)
    np.testing.assert_allclose(sc, want_s, atol=1e-4)
    assert (np.abs(np.take_along_axis(ref.scores(queries, m, metric), idx, 1) - sc) < 1e-4).all()


def test_it_rescoring_recovers_the_exact_topk(fast):
    rng = np.random.default_rng(25)
    m = (rng.standard_normal((5000, 64)) + rng.standard_normal((1, 64))).astype(np.float32)
    queries = m[:20] + 0.1 * rand((20, 64), 26)
    q, s = vec.quantize_int8(m)
    exact, _ = vec.topk(queries, m, 10)
    rescored, _ = vec.topk_int8(queries, q, s, 10, rescore=m, oversample=4)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, rescored, strict=True)])
    assert recall >= 0.99


# ----------------------------------------------------------------------------- moments


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", (1, 3, 17, 385))
def test_it_matches_reference_moments(fast, d, dtype):
    x = (rand((2000, d), 27, dtype) * 4 + 10).astype(dtype)
    got = vec.moments_accumulate(vec.moments_init(d, covariance=True), x)
    want = ref.moments_of_batch(x, covariance=True)
    assert got.count == want.count == 2000
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-12)
    np.testing.assert_allclose(got.m2, want.m2, rtol=1e-11)
    np.testing.assert_allclose(got.comoment, want.comoment, rtol=1e-10, atol=1e-8)


def test_it_matches_numpy_var_and_cov(fast):
    x = rand((3001, 5), 28, np.float64) * [1, 10, 100, 0.1, 3] + 7
    state = vec.moments_init(5, covariance=True)
    for chunk in np.array_split(x, 13):
        state = vec.moments_accumulate(state, chunk)
    fin = vec.moments_finish(state)
    np.testing.assert_allclose(fin.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(fin.var_population, x.var(0), rtol=1e-11)
    np.testing.assert_allclose(fin.var_sample, x.var(0, ddof=1), rtol=1e-11)
    np.testing.assert_allclose(fin.cov_sample, np.cov(x.T), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fin.cov_population, np.cov(x.T, bias=True), rtol=1e-10, atol=1e-12)


def test_it_merges_partial_states_exactly(fast):
    a, b = rand((1234, 17), 29, np.float64) + 3, rand((777, 17), 30, np.float64) * 5 - 2
    init = vec.moments_init(17, covariance=True)
    sequential = vec.moments_accumulate(vec.moments_accumulate(init, a), b)
    merged = vec.moments_merge(vec.moments_accumulate(init, a), vec.moments_accumulate(init, b))
    both = vec.moments_accumulate(init, np.concatenate([a, b]))
    for s in (sequential, merged):
        assert s.count == both.count
        np.testing.assert_allclose(s.mean, both.mean, rtol=1e-9)
        np.testing.assert_allclose(s.m2, both.m2, rtol=1e-9)
        np.testing.assert_allclose(s.comoment, both.comoment, rtol=1e-9, atol=1e-9)


def test_it_stays_accurate_with_a_large_offset(fast):
    """Naive E[x^2] - E[x]^2 loses every digit here; Welford/Chan keeps them."""
    x = 1e8 + rand(100_001, 31, np.float64)
    fin = vec.moments_finish(vec.moments_accumulate(vec.moments_init(1), x))
    np.testing.assert_allclose(fin.var_population[0], np.var(x - 1e8), rtol=1e-7)


def test_it_accumulates_many_float32_values(fast):
    x = rand(3_000_001, 32) * 2 + 1
    fin = vec.moments_finish(vec.moments_accumulate(vec.moments_init(1), x))
    xd = x.astype(np.float64)
    np.testing.assert_allclose(fin.mean[0], xd.mean(), rtol=1e-12)
    np.testing.assert_allclose(fin.var_sample[0], xd.var(ddof=1), rtol=1e-11)


# ----------------------------------------------------------------------------- k-means


def blobs(n=3000, d=16, k=5, seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n, d, centers=k, cluster_std=1.0, random_state=seed)
    return x.astype(np.float32), y


@pytest.mark.parametrize("d", (1, 3, 17, 385))
def test_it_matches_reference_lloyd_step(fast, d):
    x = rand((1000, d), 33)
    c = rand((6, d), 34, np.float64)
    got = vec._impl().lloyd_step(x, c)
    want = ref.lloyd_step(x, c)
    assert (got[0] == want[0]).mean() >= 0.999  # float32 dots may flip an exact near-tie
    np.testing.assert_allclose(got[1].sum(), want[1].sum(), rtol=1e-5)
    if (got[0] == want[0]).all():
        np.testing.assert_allclose(got[2], want[2], rtol=1e-9, atol=1e-9)
        assert (got[3] == want[3]).all()


def test_it_matches_reference_kmeans(fast):
    x, _ = blobs()
    got = vec.kmeans(x, 5, seed=3)
    want = ref.kmeans(x, 5, seed=3)
    assert (got.labels == want.labels).all()
    np.testing.assert_allclose(got.inertia, want.inertia, rtol=1e-5)
    np.testing.assert_allclose(got.centroids, want.centroids, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lloyd", "minibatch"])
def test_it_reaches_sklearn_kmeans_inertia(fast, method):
    from sklearn.cluster import KMeans

    x, _ = blobs(5000, 32, 8, seed=1)
    sk = KMeans(8, n_init=1, random_state=0).fit(x)
    for seed in (0, 1):
        got = vec.kmeans(x, 8, seed=seed, method=method)
        assert got.inertia <= sk.inertia_ * 1.02
        want = ref.kmeans(x, 8, seed=seed, method=method)
        assert want.inertia <= sk.inertia_ * 1.02


def test_it_is_deterministic_given_seed(fast):
    x, _ = blobs(2000, 8, 4, seed=2)
    for method in ("lloyd", "minibatch"):
        a = vec.kmeans(x, 4, seed=11, method=method)
        b = vec.kmeans(x, 4, seed=11, method=method)
        assert (a.labels == b.labels).all() and a.inertia == b.inertia
        np.testing.assert_array_equal(a.centroids, b.centroids)


def test_it_warm_starts_from_given_centroids(fast):
    x, y = blobs(2000, 8, 4, seed=3)
    truth = np.stack([x[y == j].mean(0) for j in range(4)]).astype(np.float64)
    got = vec.kmeans(x, 4, init=truth)
    assert got.iterations == 1
    assert (got.labels == y).all()
    np.testing.assert_allclose(got.centroids, truth, rtol=1e-5, atol=1e-5)


def test_it_relocates_an_empty_cluster(fast):
    x, _ = blobs(500, 4, 3, seed=4)
    init = np.concatenate([x[:2].astype(np.float64), np.full((1, 4), 1e6)])
    got = vec.kmeans(x, 3, init=init)
    assert len(np.unique(got.labels)) == 3


def test_it_matches_sklearn_silhouette_on_the_sample(fast):
    from sklearn.metrics import silhouette_score

    x, y = blobs(3000, 16, 5, seed=5)
    got = vec.silhouette(x, y, sample_size=700, seed=9)
    idx = np.sort(np.random.default_rng(9).choice(3000, size=700, replace=False))
    np.testing.assert_allclose(got, silhouette_score(x[idx], y[idx]), rtol=1e-4)
    np.testing.assert_allclose(got, ref.silhouette(x, y, 700, 9), rtol=1e-5)


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", ROWS)
def test_it_matches_reference_attention(fast, n, d):
    q, k, v = rand((3, d), 35), rand((n, d), 36), rand((n, 5), 37)
    out, mass = vec.attention(q, k, v)
    want_out, want_mass = ref.attention(q, k, v)
    np.testing.assert_allclose(mass, want_mass, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mass.sum(1), 1.0, rtol=1e-5)


def test_it_reference_attention_equals_a_plain_softmax_loop():
    q, k, v = rand(8, 38), rand((20, 8), 39), rand((20, 3), 40)
    s = [float(q.astype(np.float64) @ row) / np.sqrt(8) for row in k.astype(np.float64)]
    w = np.exp(np.array(s) - max(s))
    w /= w.sum()
    out, mass = ref.attention(q[None], k, v)
    np.testing.assert_allclose(mass[0], w, rtol=1e-6)
    np.testing.assert_allclose(out[0], w @ v.astype(np.float64), rtol=1e-5)


# ----------------------------------------------------------------------------- causal


def lagged_pair(n=400, lag=3, seed=41):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = np.roll(x, lag) * 0.8 + 0.3 * rng.standard_normal(n)
    return x, y


@pytest.mark.parametrize("n", (3, 7, 1000))
def test_it_matches_reference_lagged_xcorr(fast, n):
    x, y = lagged_pair(n)
    lag = min(5, n - 2)
    np.testing.assert_allclose(vec.lagged_xcorr(x, y, lag), ref.lagged_xcorr(x, y, lag), atol=1e-12)


def test_it_reference_xcorr_agrees_with_corrcoef_and_finds_the_lag():
    x, y = lagged_pair()
    r = ref.lagged_xcorr(x, y, 6)
    assert int(np.argmax(r)) - 6 == 3
    np.testing.assert_allclose(r[6 + 3], np.corrcoef(x[:-3], y[3:])[0, 1], rtol=1e-12)
    np.testing.assert_allclose(r[6 - 2], np.corrcoef(x[2:], y[:-2])[0, 1], rtol=1e-12)
    assert ref.lagged_xcorr(np.ones(10), y[:10], 2).tolist() == [0.0] * 5


def test_it_matches_reference_granger(fast):
    x, y = lagged_pair()
    for lag in (1, 3, 5):
        got, want = vec.granger_f(x, y, lag), ref.granger_f(x, y, lag)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-9)
        assert got[2:] == want[2:] == (lag, len(y) - 3 * lag - 1)
    with pytest.raises(ValueError, match="collinear"):
        vec.granger_f(np.ones(100), y[:100], 2)
    with pytest.raises(ValueError, match="collinear"):
        vec.granger_f(y, y, 2)
    offset, scaled = x + 1e6, y * 1e-4 - 3e3  # far from zero: the normal equations must not lose it
    np.testing.assert_allclose(vec.granger_f(offset, scaled, 4)[0], ref.granger_f(offset, scaled, 4)[0], rtol=1e-6)


def test_it_reference_granger_equals_plain_lstsq():
    x, y = lagged_pair(300, lag=1)
    lag, n = 2, len(y)
    own = [y[lag - j : n - j] for j in (1, 2)]
    other = [x[lag - j : n - j] for j in (1, 2)]
    restricted = np.column_stack([np.ones(n - lag), *own])
    full = np.column_stack([restricted, *other])
    rss = [np.linalg.lstsq(a, y[lag:], rcond=None)[1][0] for a in (restricted, full)]
    f = ((rss[0] - rss[1]) / 2) / (rss[1] / (n - lag - 5))
    got = ref.granger_f(x, y, lag)
    np.testing.assert_allclose(got[0], f, rtol=1e-8)
    assert got[2:] == (2, n - 7)


def test_it_detects_granger_causality_one_way(any_backend):
    x, y = lagged_pair(lag=2)
    forward = vec.granger_f(x, y, 3)
    backward = vec.granger_f(y, x, 3)
    assert forward.p_value < 1e-10 and forward.f > 100
    assert backward.p_value > 1e-3


def test_it_f_tail_without_scipy_matches_scipy():
    from scipy import special, stats

    for a, b, t in ((0.5, 2.5, 0.3), (3.0, 7.0, 0.9), (40.0, 2.0, 0.99), (1.5, 245.0, 0.01)):
        np.testing.assert_allclose(ref.betainc(a, b, t), special.betainc(a, b, t), rtol=1e-10)
    for f, d1, d2 in ((0.5, 3, 100), (4.2, 2, 30), (30.0, 5, 400)):
        np.testing.assert_allclose(ref.f_sf_fallback(f, d1, d2), stats.f.sf(f, d1, d2), rtol=1e-8)


# ----------------------------------------------------------------------------- repetition


def test_it_matches_reference_repetition(fast):
    rng = np.random.default_rng(42)
    for tokens in (rng.integers(0, 5, 300), rng.integers(0, 50_000, 2000), np.array([7]), np.arange(9)):
        for n in (1, 2, 3, 4, 12):
            assert vec.repetition_rate(tokens, n) == ref.repetition_rate(tokens, n)
        assert vec.boredom(tokens) == pytest.approx(ref.boredom(tokens), abs=1e-15)


def test_it_counts_repeated_ngrams_by_hand(any_backend):
    tokens = [1, 2, 1, 2, 1, 2]  # bigrams 12 21 12 21 12: three repeat an earlier one
    assert vec.repetition_rate(tokens, 2) == pytest.approx(3 / 5)
    assert vec.repetition_rate(tokens, 1) == pytest.approx(4 / 6)
    assert vec.repetition_rate(tokens, 7) == 0.0
    assert vec.boredom(list(range(100))) == 0.0
    assert vec.boredom([5] * 1000) > 0.99
    assert 0.0 < vec.boredom([1, 2, 3, 1, 2, 3, 4, 5]) < 0.5


# ----------------------------------------------------------------------------- merkle


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """Straight from RFC 6962 §2.1: split at the largest power of two below n."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def digests(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(n)]


def test_it_reference_merkle_root_is_rfc6962():
    for n in range(1, 40):
        assert ref.merkle_root(digests(n)) == rfc6962_root(digests(n))


def test_it_matches_reference_merkle(fast):
    for n in (1, 2, 3, 5, 8, 13, 64, 1000):
        d = digests(n)
        root = vec.merkle_root(d)
        assert root == ref.merkle_root(d)
        assert vec.merkle_root(np.frombuffer(b"".join(d), np.uint8).reshape(n, 32)) == root
        for i in sorted({0, n // 2, n - 1}):
            proof = vec.merkle_proof(d, i)
            assert proof == ref.merkle_proof(d, i)
            assert vec.merkle_verify(d[i], proof, root)


def test_it_rejects_a_tampered_proof(fast):
    d = digests(11)
    root = vec.merkle_root(d)
    proof = vec.merkle_proof(d, 4)
    assert not vec.merkle_verify(d[5], proof, root)
    bad = list(proof)
    bad[1] = (bytes(32), bad[1][1])
    assert not vec.merkle_verify(d[4], bad, root)
    flipped = [(s, not left) for s, left in proof]
    assert not vec.merkle_verify(d[4], flipped, root)


def test_it_computes_sha256_like_hashlib():
    from native import _core

    rng = np.random.default_rng(43)
    for n in list(range(0, 130)) + [1000, 4096]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _core.sha256(data) == hashlib.sha256(data).digest()


# ----------------------------------------------------------------------------- module contracts


def test_it_keeps_vector_kernels_unshadowed_by_the_model_half():
    """reference.py star-imports reference_model; a name clash would silently swap a kernel."""
    names = [n for n in vec.__all__ if hasattr(ref, n)] + ["scores", "topk", "lloyd_step", "sqdist"]
    clashes = [n for n in names if getattr(getattr(ref, n), "__module__", "native.reference") != "native.reference"]
    assert clashes == []


def test_it_imports_without_touching_cupy():
    import subprocess
    import sys

    code = "import sys, native, native.vector, native._cupy; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(native.__file__).parents[1]))


# ----------------------------------------------------------------------------- GPU path logic


class NumpyAsCupy:
    """Just enough of the CuPy namespace, backed by NumPy, to run native/_cupy.py without a GPU.
    It checks the GPU path's array logic (shapes, dtypes, ties, masking), not CUDA itself."""

    def __getattr__(self, name):
        return getattr(np, name)

    asnumpy = staticmethod(np.asarray)

    @staticmethod
    def argsort(a, axis=-1):
        return np.argsort(a, axis=axis, kind="stable")  # CuPy's sort is always stable


@pytest.fixture
def cupy_on_numpy(monkeypatch):
    from native import _cupy

    monkeypatch.setattr(_cupy, "_cp", NumpyAsCupy)
    monkeypatch.setattr(vec, "_impl", lambda work="small": _cupy.CupyKernels)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_it_runs_the_cupy_path_logic_like_the_reference(cupy_on_numpy, metric):
    m, q = rand((1000, 17), 50), rand((4, 17), 51)
    m[3] = 0.0
    m[10] = m[11]
    np.testing.assert_allclose(vec.scores(q, m, metric), ref.scores(q, m, metric), atol=1e-5)
    idx, sc = vec.topk(q, m, 1003, metric)
    assert_topk_matches(q, m, 1003, metric, idx, sc)
    q8, s8 = vec.quantize_int8(m)
    rq, rs = ref.quantize_int8(m)
    assert np.abs(q8.astype(int) - rq).max() <= 1 and np.array_equal(s8, rs)
    idx, sc = vec.topk_int8(q, rq, rs, 5, metric, rescore=m)
    want_i, want_s = ref.topk_int8(q, rq, rs, 5, metric, rescore=m)
    np.testing.assert_allclose(sc, want_s, atol=1e-5)
    with pytest.raises(ValueError):
        bad = m.copy()
        bad[7, 2] = np.nan
        vec.topk(q, bad, 3, metric)


def test_it_runs_the_cupy_path_analytics_like_the_reference(cupy_on_numpy):
    x = rand((500, 9), 52, np.float64) * 3 + 1
    st = vec.moments_accumulate(vec.moments_init(9, covariance=True), x)
    np.testing.assert_allclose(vec.moments_finish(st).cov_sample, np.cov(x.T), rtol=1e-10)
    pts, _ = blobs(1500, 8, 4, seed=6)
    got, want = vec.kmeans(pts, 4, seed=2), ref.kmeans(pts, 4, seed=2)
    assert (got.labels == want.labels).all()
    np.testing.assert_allclose(got.inertia, want.inertia, rtol=1e-5)
    qa, ka, va = rand((2, 17), 53), rand((40, 17), 54), rand((40, 3), 55)
    for a, b in zip(vec.attention(qa, ka, va), ref.attention(qa, ka, va), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    xs, ys = lagged_pair(200)
    np.testing.assert_allclose(vec.lagged_xcorr(xs, ys, 4), ref.lagged_xcorr(xs, ys, 4), atol=1e-12)
    d = digests(9)
    assert vec.merkle_root(d) == ref.merkle_root(d)
