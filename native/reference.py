"""NumPy executable specification of the vector-search and analytics kernels.

Every function here is the meaning of the kernel with the same name in `_core.c` and `_cupy.py`:
short, obviously right, slow where it must be. Inputs are assumed validated by `native.vector`.

Conventions (shared by every backend):
- top-k order: score descending, ties broken by the lower index.
- cosine of a zero vector is 0 (never NaN).
- lagged_xcorr: r[lag + max_lag] = pearson(x[t], y[t + lag]) over the overlap; lag > 0 means x leads y.
- merkle: RFC 6962 hashing, leaf = sha256(0x00 || d), node = sha256(0x01 || left || right); built
  bottom-up, an odd node at the end of a level is promoted unchanged (this equals RFC 6962's
  largest-power-of-two split).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- scores and top-k


def row_inverse_norms(m: np.ndarray) -> np.ndarray:
    """1/||row|| in float64, 0 for a zero row (so cosine with a zero vector is 0)."""
    # m: (N, D) float
    norms = np.sqrt(np.einsum("nd,nd->n", m.astype(np.float64), m.astype(np.float64)))
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)  # (N,) float64


def scores(queries: np.ndarray, matrix: np.ndarray, metric: str) -> np.ndarray:
    # queries: (Q, D) float; matrix: (N, D) float16|float32 -> (Q, N) float32
    q = queries.astype(np.float64)
    m = matrix.astype(np.float64)
    s = q @ m.T  # (Q, N) float64
    if metric == "cosine":
        s *= row_inverse_norms(q)[:, None] * row_inverse_norms(m)[None, :]
    return s.astype(np.float32)


def topk_from_scores(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # s: (Q, N) float32 -> indices (Q, min(k, N)) int64, scores (Q, min(k, N)) float32
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]  # stable: equal scores keep lower index first
    return order.astype(np.int64), np.take_along_axis(s, order, axis=1)


def topk(queries: np.ndarray, matrix: np.ndarray, k: int, metric: str):
    # queries: (Q, D); matrix: (N, D) -> (Q, k') int64, (Q, k') float32
    return topk_from_scores(scores(queries, matrix, metric), k)


def quantize_int8(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: row ≈ q * scale, scale = max|row| / 127 (0 for a zero row)."""
    # matrix: (N, D) float -> q: (N, D) int8, scale: (N,) float32
    m = matrix.astype(np.float32)
    scale = (np.abs(m).max(axis=1) / np.float32(127.0)).astype(np.float32)  # (N,)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.rint(m / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    # q: (N, D) int8, scale: (N,) float32 -> (N, D) float32
    return q.astype(np.float32) * scale[:, None]


def topk_int8(queries, q, scale, k, metric, rescore=None, oversample=4):
    """Top-k over int8 rows; with `rescore` (the float matrix), take k*oversample int8 candidates
    and re-rank them by exact float scores."""
    # queries: (Q, D); q: (N, D) int8; scale: (N,) float32; rescore: (N, D) float or None
    approx = scores(queries, dequantize_int8(q, scale), metric)  # (Q, N) float32
    if rescore is None:
        return topk_from_scores(approx, k)
    cand, _ = topk_from_scores(approx, min(k * oversample, q.shape[0]))  # (Q, C) int64
    out_i, out_s = [], []
    for row, c in enumerate(cand):
        exact = scores(queries[row : row + 1], rescore[c], metric)[0]  # (C,) float32
        order = np.lexsort((c, -exact))[:k]  # score desc, then index asc
        out_i.append(c[order])
        out_s.append(exact[order])
    return np.stack(out_i), np.stack(out_s)


# ----------------------------------------------------------------------------- streaming moments


@dataclass
class MomentState:
    """Mergeable (count, mean, M2[, comoment]) state of a streaming mean/variance/covariance."""

    count: int
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64: sum of squared deviations from the mean
    comoment: np.ndarray | None = None  # (D, D) float64: sum of outer products of deviations


def moments_init(dim: int, covariance: bool = False) -> MomentState:
    como = np.zeros((dim, dim)) if covariance else None
    return MomentState(0, np.zeros(dim), np.zeros(dim), como)


def moments_of_batch(x: np.ndarray, covariance: bool) -> MomentState:
    """Two-pass statistics of one batch (the exact 'leaf' of the Chan combination)."""
    # x: (N, D) float
    xd = x.astype(np.float64)
    mean = xd.mean(axis=0)
    dev = xd - mean  # (N, D) float64
    como = dev.T @ dev if covariance else None
    return MomentState(x.shape[0], mean, (dev * dev).sum(axis=0), como)


def moments_merge(a: MomentState, b: MomentState) -> MomentState:
    """Chan et al. parallel combination; exact up to rounding, associative like a SQL aggregate."""
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean  # (D,) float64
    w = a.count * b.count / n
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * w
    como = None
    if a.comoment is not None and b.comoment is not None:
        como = a.comoment + b.comoment + np.outer(delta, delta) * w
    return MomentState(n, mean, m2, como)


def moments_accumulate(state: MomentState, x: np.ndarray) -> MomentState:
    # x: (N, D) float
    return moments_merge(state, moments_of_batch(x, state.comoment is not None))


@dataclass
class Moments:
    count: int
    mean: np.ndarray  # (D,) float64
    var_population: np.ndarray  # (D,) float64, M2 / n
    var_sample: np.ndarray  # (D,) float64, M2 / (n - 1); NaN when n < 2
    cov_population: np.ndarray | None  # (D, D) float64
    cov_sample: np.ndarray | None  # (D, D) float64


def moments_finish(s: MomentState) -> Moments:
    n = s.count
    pop = s.m2 / n if n else np.full_like(s.m2, np.nan)
    samp = s.m2 / (n - 1) if n > 1 else np.full_like(s.m2, np.nan)
    cpop = csamp = None
    if s.comoment is not None:
        cpop = s.comoment / n if n else np.full_like(s.comoment, np.nan)
        csamp = s.comoment / (n - 1) if n > 1 else np.full_like(s.comoment, np.nan)
    return Moments(n, s.mean.copy(), pop, samp, cpop, csamp)


# ----------------------------------------------------------------------------- k-means


def lloyd_step(x: np.ndarray, centroids: np.ndarray):
    """Assign every row to its nearest centroid and sum rows per cluster."""
    # x: (N, D) float32; centroids: (K, D) float -> labels (N,) int64, mindist (N,) float64,
    # sums (K, D) float64, counts (K,) int64
    xd = x.astype(np.float64)
    c = centroids.astype(np.float64)
    d = (xd * xd).sum(1)[:, None] - 2.0 * xd @ c.T + (c * c).sum(1)[None, :]  # (N, K)
    labels = np.argmin(d, axis=1).astype(np.int64)
    mindist = np.maximum(d[np.arange(len(x)), labels], 0.0)
    k = c.shape[0]
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, xd)
    return labels, mindist, sums, np.bincount(labels, minlength=k).astype(np.int64)


def sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    # x: (N, D) float, c: (M, D) float -> (N, M) float64 squared euclidean distances, >= 0
    xd, cd = x.astype(np.float64), c.astype(np.float64)
    d = (xd * xd).sum(1)[:, None] - 2.0 * xd @ cd.T + (cd * cd).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans_plusplus(x, k: int, rng: np.random.Generator, sqdist_fn: Callable = sqdist):
    """Greedy k-means++ (Arthur & Vassilvitskii; 2 + ln k local trials as in scikit-learn)."""
    # x: (N, D) float32 -> (K, D) float64
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centers = [x[rng.integers(n)].astype(np.float64)]
    closest = sqdist_fn(x, centers[0][None, :])[:, 0]  # (N,) float64
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # all points coincide with chosen centers: any point will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(np.cumsum(closest), rng.random(trials) * total)
            cand = np.minimum(cand, n - 1)
        d = np.minimum(closest[:, None], sqdist_fn(x, x[cand]))  # (N, trials)
        best = int(np.argmin(d.sum(0)))
        closest = d[:, best]
        centers.append(x[cand[best]].astype(np.float64))
    return np.stack(centers)


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (K, D) float64
    labels: np.ndarray  # (N,) int64
    inertia: float  # sum of squared distances to the assigned centroid
    iterations: int


def _new_centroids(old, sums, counts, mindist, x):
    """Mean of each cluster; an empty cluster takes the point farthest from its centroid."""
    c = old.copy()
    nonempty = counts > 0
    c[nonempty] = sums[nonempty] / counts[nonempty, None]
    if not nonempty.all():
        far = np.argsort(-mindist, kind="stable")
        for j, idx in zip(np.flatnonzero(~nonempty), far, strict=False):
            c[j] = x[idx]
    return c


def kmeans(
    x, k, *, seed=0, max_iter=300, tol=1e-4, init=None, method="lloyd", batch_size=1024,
    step_fn: Callable = lloyd_step, sqdist_fn: Callable = sqdist, mean_var: float | None = None,
) -> KMeansResult:
    """Lloyd (or mini-batch) k-means; `step_fn`/`sqdist_fn` are the only backend-specific parts.
    Stops when the centroids move less than tol * (mean per-column variance of x), like sklearn;
    `mean_var` may be given when the caller already knows it."""
    # x: (N, D) float32; init: (K, D) float or None
    rng = np.random.default_rng(seed)
    if init is not None:
        c = np.array(init, dtype=np.float64)
    elif method == "minibatch":  # seed on a sample of 3 batches, as scikit-learn does
        sample = rng.choice(len(x), size=min(len(x), max(3 * batch_size, 3 * k)), replace=False)
        c = kmeans_plusplus(x[np.sort(sample)], k, rng, sqdist_fn)
    else:
        c = kmeans_plusplus(x, k, rng, sqdist_fn)
    if mean_var is None:
        mean_var = float(np.mean(np.var(x, axis=0, dtype=np.float64)))
    tol_abs = tol * mean_var
    if method == "minibatch":
        c, it = _minibatch(x, c, rng, max_iter, tol_abs, batch_size, step_fn)
    else:
        it, previous = 0, None
        for it in range(1, max_iter + 1):  # noqa: B007
            labels, mindist, sums, counts = step_fn(x, c)
            if previous is not None and (labels == previous).all():
                # strict convergence: the same labels give the same centroids
                return KMeansResult(c, labels, float(mindist.sum()), it)
            new = _new_centroids(c, sums, counts, mindist, x)
            shift = float(((new - c) ** 2).sum())
            c, previous = new, labels
            if shift <= tol_abs:
                break
    labels, mindist, _, _ = step_fn(x, c)
    return KMeansResult(c, labels, float(mindist.sum()), it)


def _minibatch(x, c, rng, max_iter, tol_abs, batch_size, step_fn):
    """Sculley's mini-batch k-means with per-centre counts and scikit-learn's early stop
    (no improvement of the smoothed batch inertia for 10 steps)."""
    n = x.shape[0]
    size = min(batch_size, n)
    seen = np.zeros(c.shape[0])
    alpha = min(1.0, 2.0 * size / (n + 1))
    ewa, best, quiet, step = None, np.inf, 0, 0
    for step in range(1, max_iter * -(-n // size) + 1):  # noqa: B007
        batch = x[rng.integers(n, size=size)]
        _, mindist, sums, counts = step_fn(batch, c)
        seen += counts
        hit = counts > 0
        new = c.copy()
        new[hit] = c[hit] + (sums[hit] - counts[hit, None] * c[hit]) / seen[hit, None]
        shift = float(((new - c) ** 2).sum())
        c = new
        batch_inertia = float(mindist.sum()) / size
        ewa = batch_inertia if ewa is None else ewa * (1 - alpha) + batch_inertia * alpha
        quiet = 0 if ewa < best else quiet + 1
        best = min(best, ewa)
        if quiet >= 10 or (tol_abs > 0 and shift <= tol_abs):
            break
    return c, step


def silhouette(x, labels, sample_size: int, seed: int, sqdist_fn: Callable = sqdist) -> float:
    """Mean silhouette over a random sample (euclidean; a singleton cluster scores 0)."""
    # x: (N, D) float; labels: (N,) int
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    idx = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    xs, ls = x[idx], labels[idx]
    dist = np.sqrt(sqdist_fn(xs, xs))  # (S, S) float64
    np.fill_diagonal(dist, 0.0)
    uniq = np.unique(ls)
    if len(uniq) < 2:
        raise ValueError("silhouette needs at least 2 clusters in the sample")
    per = np.stack([dist[:, ls == u].sum(1) for u in uniq], axis=1)  # (S, U) distance sums
    sizes = np.array([(ls == u).sum() for u in uniq], dtype=np.float64)
    own = np.searchsorted(uniq, ls)
    own_size = sizes[own]
    a = per[np.arange(len(ls)), own] / np.maximum(own_size - 1, 1)
    other = per / sizes[None, :]
    other[np.arange(len(ls)), own] = np.inf
    b = other.min(1)
    s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


# ----------------------------------------------------------------------------- attention


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray):
    """softmax(q·Kᵀ/√d)·V and the softmax mass per key (each row of mass sums to 1)."""
    # q: (Q, D) float32; k: (N, D) float32; v: (N, Dv) float32 -> out (Q, Dv), mass (Q, N) float32
    s = q.astype(np.float64) @ k.astype(np.float64).T / math.sqrt(q.shape[1])
    w = np.exp(s - s.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return (w @ v.astype(np.float64)).astype(np.float32), w.astype(np.float32)


def span_mass(probs: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Attention mass per key span: probs (L, H, N) (rows of attention probabilities of one query in L
    layers and H heads), spans (S, 2) [start, end) -> (S,) float32, the mean over layers and heads of the
    mass on the span (prefix sums, so S spans cost one pass over probs)."""
    per_key = probs.sum(axis=(0, 1), dtype=np.float64) / (probs.shape[0] * probs.shape[1])
    c = np.concatenate([[0.0], np.cumsum(per_key)])
    return (c[spans[:, 1]] - c[spans[:, 0]]).astype(np.float32)


# ----------------------------------------------------------------------------- causal


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(da @ da) * float(db @ db))
    return float(da @ db) / den if den > 0 else 0.0


def lagged_xcorr(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """r[lag + max_lag] = pearson(x[t], y[t + lag]) over the overlapping t (0 if a side is constant)."""
    # x, y: (T,) float64 -> (2 * max_lag + 1,) float64
    n = len(x)
    out = []
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            out.append(_pearson(x[: n - lag], y[lag:]))
        else:
            out.append(_pearson(x[-lag:], y[: n + lag]))
    return np.array(out)


def granger_design(x: np.ndarray, y: np.ndarray, lag: int):
    """Target y[t] and [1, y[t-1..t-lag], x[t-1..t-lag]] for t = lag..T-1."""
    # x, y: (T,) float64 -> target (T-lag,), design (T-lag, 1 + 2*lag)
    n = len(y)
    cols = [np.ones(n - lag)]
    cols += [y[lag - j : n - j] for j in range(1, lag + 1)]
    cols += [x[lag - j : n - j] for j in range(1, lag + 1)]
    return y[lag:], np.stack(cols, axis=1)


def _rss(design: np.ndarray, target: np.ndarray) -> float:
    """OLS residual sum of squares; column 0 is the intercept, absorbed by centring the rest."""
    # design: (M, P) float64 with design[:, 0] == 1; target: (M,) float64
    xc = design[:, 1:] - design[:, 1:].mean(axis=0)
    norms = np.linalg.norm(xc, axis=0)
    if (norms == 0).any() or np.linalg.matrix_rank(xc / norms) < xc.shape[1]:
        raise ValueError("granger_f: regressors are collinear (constant or duplicated series)")
    tc = target - target.mean()
    beta = np.linalg.lstsq(xc / norms, tc, rcond=None)[0]
    r = tc - (xc / norms) @ beta
    return float(r @ r)


def granger_rss(x: np.ndarray, y: np.ndarray, lag: int) -> tuple[float, float, int]:
    """Residual sums of squares of the restricted (own lags) and unrestricted (+ x lags) OLS."""
    target, design = granger_design(x, y, lag)
    return _rss(design[:, : 1 + lag], target), _rss(design, target), len(target)


def granger_from_rss(rss_r: float, rss_u: float, n_obs: int, lag: int):
    df_num, df_den = lag, n_obs - 2 * lag - 1
    if rss_u <= 0.0:
        return math.inf, 0.0, df_num, df_den
    f = max((rss_r - rss_u) / df_num, 0.0) / (rss_u / df_den)
    return f, f_sf(f, df_num, df_den), df_num, df_den


def granger_f(x: np.ndarray, y: np.ndarray, lag: int):
    """Does the past of x help predict y? -> (F, p_value, df_num, df_den)."""
    rss_r, rss_u, n_obs = granger_rss(x, y, lag)
    return granger_from_rss(rss_r, rss_u, n_obs, lag)


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction (Numerical Recipes)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(ln_front) * h / a


def f_sf_fallback(f: float, d1: int, d2: int) -> float:
    """P(F > f) for F(d1, d2) = I_{d2/(d2 + d1 f)}(d2/2, d1/2)."""
    return betainc(d2 / 2.0, d1 / 2.0, d2 / (d2 + d1 * f))


def f_sf(f: float, d1: int, d2: int) -> float:
    try:
        from scipy.stats import f as f_dist
    except ImportError:
        return f_sf_fallback(f, d1, d2)
    return float(f_dist.sf(f, d1, d2))


# ----------------------------------------------------------------------------- repetition


def repetition_rate(tokens: np.ndarray, n: int) -> float:
    """Share of the n-grams that repeat an n-gram seen earlier in the sequence (0 if none)."""
    # tokens: (T,) int64
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def boredom(tokens: np.ndarray, max_n: int = 4, distinct_weight: float = 0.25) -> float:
    """0 (fresh) .. 1 (one token forever).

    distinct_weight * (1 - distinct/T) + (1 - distinct_weight) * mean(repetition_rate(n), n=2..max_n).
    The first term is repetition_rate(tokens, 1): the distinct-token ratio seen as 1-gram repetition.
    """
    distinct_term = 1.0 - len(np.unique(tokens)) / len(tokens)
    if max_n < 2:
        return distinct_term
    rep = [repetition_rate(tokens, n) for n in range(2, max_n + 1)]
    return distinct_weight * distinct_term + (1.0 - distinct_weight) * float(np.mean(rep))


# ----------------------------------------------------------------------------- merkle proofs


def merkle_leaf(d: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + d).digest()


def merkle_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_levels(digests: list[bytes]) -> list[list[bytes]]:
    """All levels, leaves first; an odd last node is promoted unchanged."""
    level = [merkle_leaf(d) for d in digests]
    levels = [level]
    while len(level) > 1:
        nxt = [merkle_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(digests: list[bytes]) -> bytes:
    return merkle_levels(digests)[-1][0]


def merkle_proof(digests: list[bytes], index: int) -> list[tuple[bytes, bool]]:
    """Audit path: (sibling hash, sibling_is_left) from the leaf level up."""
    proof = []
    for level in merkle_levels(digests)[:-1]:
        sib = index ^ 1
        if sib < len(level):
            proof.append((level[sib], sib < index))
        index //= 2
    return proof


def merkle_verify(leaf: bytes, proof: list[tuple[bytes, bool]], root: bytes) -> bool:
    h = merkle_leaf(leaf)
    for sib, sib_is_left in proof:
        h = merkle_node(sib, h) if sib_is_left else merkle_node(h, sib)
    return h == root


try:
    from .reference_model import *  # noqa: F401,F403  (model math, owned by the model-math half)
except ImportError:
    pass
