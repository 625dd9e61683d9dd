"""Vector search and analytics kernels: validation here, the work in the backend in force.

`native._backend.backend()` picks 'cupy' (GPU), 'c' (native._core) or 'reference' (NumPy spec in
native/reference.py). Every function checks its inputs and raises ValueError with a clear message:
wrong ndim or dtype, dimension mismatch, empty input, k <= 0, NaN/inf values.

Finite checks on the big matrices of `scores`/`topk`/`topk_int8` and on `moments_accumulate`
batches are done by the kernels themselves (a NaN/inf row yields a non-finite score or moment,
which is rejected) so they cost no extra pass over memory.
"""
from __future__ import annotations

import numpy as np

from . import reference as ref
from ._backend import backend_for
from .reference import KMeansResult, Moments, MomentState

__all__ = [
    "GrangerResult",
    "KMeansResult",
    "MomentState",
    "Moments",
    "attention",
    "boredom",
    "granger_f",
    "kmeans",
    "lagged_xcorr",
    "merkle_proof",
    "merkle_root",
    "merkle_verify",
    "moments_accumulate",
    "moments_finish",
    "moments_init",
    "moments_merge",
    "quantize_int8",
    "repetition_rate",
    "scores",
    "silhouette",
    "span_mass",
    "topk",
    "topk_int8",
]

METRICS = ("cosine", "dot")
NONFINITE = "non-finite score: NaN/inf in the input (or overflow)"


GPU_MIN_QUERIES = 128  # auto mode: fewer queries than this are scored on the CPU (the matrix copy dominates)


def _impl(work: str = "small") -> type:
    """The kernels of the backend for this work (see _backend.backend_for), under one set of
    signatures (see _ReferenceKernels)."""
    name = backend_for(work)
    if name == "c":
        return _CKernels
    if name == "cupy":
        from ._cupy import CupyKernels

        return CupyKernels
    return _reference_kernels


# ----------------------------------------------------------------------------- validation


def _finite(a: np.ndarray, what: str) -> None:
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or inf")


def _matrix(m, what: str = "matrix", dtypes=(np.float32, np.float16)) -> np.ndarray:
    """(N, D) C-contiguous array of one of `dtypes`; float64 is cast to float32."""
    m = np.asarray(m)
    if m.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (N, D) array, got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{what}: empty (shape {m.shape})")
    if m.dtype == np.float64 and np.float32 in dtypes:
        m = m.astype(np.float32)
    if m.dtype not in dtypes:
        names = ", ".join(np.dtype(t).name for t in dtypes)
        raise ValueError(f"{what}: dtype must be one of {names}, got {m.dtype}")
    return np.ascontiguousarray(m)


def _search_work(q: np.ndarray) -> str:
    return "batched" if len(q) >= GPU_MIN_QUERIES else "small"


def _queries(q, dim: int) -> tuple[np.ndarray, bool]:
    """(Q, D) float32 queries and whether a single 1-D query was given."""
    q = np.asarray(q)
    if q.ndim not in (1, 2):
        raise ValueError(f"queries: expected (D,) or (Q, D), got shape {q.shape}")
    single = q.ndim == 1
    q2 = q.reshape(1, -1) if single else q
    if q2.shape[0] == 0 or q2.shape[1] == 0:
        raise ValueError(f"queries: empty (shape {q.shape})")
    if q2.shape[1] != dim:
        raise ValueError(f"queries have dimension {q2.shape[1]} but the matrix has {dim}")
    if not np.issubdtype(q2.dtype, np.floating):
        raise ValueError(f"queries: dtype must be floating, got {q2.dtype}")
    q2 = np.ascontiguousarray(q2, dtype=np.float32)
    _finite(q2, "queries")
    return q2, single


def _metric(metric: str) -> bool:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric == "cosine"


def _k(k) -> int:
    if int(k) != k or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _series(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D series, got shape {x.shape}")
    _finite(x, what)
    return np.ascontiguousarray(x)


def _tokens(tokens) -> np.ndarray:
    t = np.asarray(tokens)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"tokens: expected a non-empty 1-D int sequence, got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"tokens: dtype must be integer, got {t.dtype}")
    return np.ascontiguousarray(t, dtype=np.int64)


# ----------------------------------------------------------------------------- search


def scores(queries, matrix, metric: str = "cosine") -> np.ndarray:
    """Dot or cosine scores. queries (D,) or (Q, D); matrix (N, D) float32|float16 -> (N,)|(Q, N) f32."""
    m = _matrix(matrix)
    q, single = _queries(queries, m.shape[1])
    s = _impl(_search_work(q)).scores(q, m, None, _metric(metric))
    return s[0] if single else s


def topk(queries, matrix, k: int, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k, best first (ties: lower index). -> indices int64, scores float32, (k',) or (Q, k'),
    k' = min(k, N)."""
    m = _matrix(matrix)
    q, single = _queries(queries, m.shape[1])
    idx, sc = _impl(_search_work(q)).topk(q, m, None, _metric(metric), _k(k))
    return (idx[0], sc[0]) if single else (idx, sc)


def quantize_int8(matrix) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 codes: row ≈ q * scale. (N, D) float -> q (N, D) int8, scale (N,) f32."""
    m = _matrix(matrix).astype(np.float32, copy=False)
    _finite(m, "matrix")
    return _impl().quantize_int8(m)


def topk_int8(queries, q, scale, k: int, metric: str = "cosine", rescore=None, oversample: int = 4):
    """Top-k over int8 codes; with `rescore` (the float (N, D) matrix) the k * oversample best
    int8 candidates are re-ranked by exact scores. Same return shapes as `topk`."""
    qm = _matrix(q, "q", dtypes=(np.int8,))
    sc = np.ascontiguousarray(scale, dtype=np.float32)
    if sc.shape != (qm.shape[0],):
        raise ValueError(f"scale: expected shape ({qm.shape[0]},), got {sc.shape}")
    if not np.isfinite(sc).all() or (sc < 0).any():
        raise ValueError("scale: must be finite and >= 0")
    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    queries2, single = _queries(queries, qm.shape[1])
    cosine, k = _metric(metric), _k(k)
    impl = _impl(_search_work(queries2))
    if rescore is None:
        idx, s = impl.topk(queries2, qm, sc, cosine, k)
    else:
        full = _matrix(rescore, "rescore")
        if full.shape != qm.shape:
            raise ValueError(f"rescore: expected shape {qm.shape}, got {full.shape}")
        cand, _ = impl.topk(queries2, qm, sc, cosine, min(k * int(oversample), qm.shape[0]))
        idx, s = _rerank(impl, queries2, full, cand, cosine, k)
    return (idx[0], s[0]) if single else (idx, s)


def _rerank(impl, queries, full, cand, cosine, k):
    # queries: (Q, D) f32; full: (N, D); cand: (Q, C) int64 -> (Q, k') int64, (Q, k') f32
    out_i, out_s = [], []
    for row, c in enumerate(cand):
        exact = impl.scores(queries[row : row + 1], np.ascontiguousarray(full[c]), None, cosine)[0]
        order = np.lexsort((c, -exact))[:k]
        out_i.append(c[order])
        out_s.append(exact[order])
    return np.stack(out_i), np.stack(out_s)


# ----------------------------------------------------------------------------- moments


def moments_init(dim: int, covariance: bool = False) -> MomentState:
    """Empty state for `dim` columns (1-D batches count as one column)."""
    if int(dim) != dim or dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return ref.moments_init(int(dim), covariance)


def moments_accumulate(state: MomentState, batch) -> MomentState:
    """Folds a batch (N,) or (N, D) float into the state (Chan's parallel combination)."""
    x = np.asarray(batch)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"batch: expected a non-empty (N,) or (N, D) array, got shape {np.shape(batch)}")
    if x.shape[1] != state.mean.shape[0]:
        raise ValueError(f"batch has {x.shape[1]} columns but the state has {state.mean.shape[0]}")
    if x.dtype not in (np.float32, np.float64):
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"batch: dtype must be numeric, got {x.dtype}")
        x = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf is reported just below
        part = _impl().moments_of_batch(np.ascontiguousarray(x), state.comoment is not None)
    if not (np.isfinite(part.mean).all() and np.isfinite(part.m2).all()):
        raise ValueError("batch: contains NaN or inf")
    return ref.moments_merge(state, part)


def moments_merge(a: MomentState, b: MomentState) -> MomentState:
    """Combines two partial states exactly (like merging partial SQL aggregates)."""
    if a.mean.shape != b.mean.shape or (a.comoment is None) != (b.comoment is None):
        raise ValueError("moments_merge: states differ in dimension or covariance tracking")
    return ref.moments_merge(a, b)


def moments_finish(state: MomentState) -> Moments:
    """mean, population and sample variance (and covariance if tracked)."""
    return ref.moments_finish(state)


# ----------------------------------------------------------------------------- k-means


def _points(x) -> np.ndarray:
    x = _matrix(x, "x", dtypes=(np.float32,))
    _finite(x, "x")
    return x


def kmeans(
    x, k: int, *, seed: int = 0, max_iter: int = 300, tol: float = 1e-4, init=None,
    method: str = "lloyd", batch_size: int = 1024,
) -> KMeansResult:
    """k-means++ seeded (or warm-started from `init` (K, D)) Lloyd or mini-batch k-means on
    x (N, D) float32. Deterministic given `seed`. -> centroids (K, D) f64, labels, inertia, iterations."""
    x = _points(x)
    k = _k(k)
    if k > x.shape[0]:
        raise ValueError(f"k={k} exceeds the number of points {x.shape[0]}")
    if method not in ("lloyd", "minibatch"):
        raise ValueError(f"method must be 'lloyd' or 'minibatch', got {method!r}")
    if max_iter < 1 or batch_size < 1 or tol < 0:
        raise ValueError("max_iter and batch_size must be >= 1 and tol >= 0")
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (k, x.shape[1]):
            raise ValueError(f"init: expected shape {(k, x.shape[1])}, got {init.shape}")
        _finite(init, "init")
    mean_var = float(_impl().moments_of_batch(x, False).m2.mean()) / x.shape[0]
    impl = _impl("batched")
    points = impl.resident(x) if hasattr(impl, "resident") else impl  # GPU: x copied once per run
    return ref.kmeans(
        x, k, seed=seed, max_iter=max_iter, tol=tol, init=init, method=method,
        batch_size=batch_size, step_fn=points.lloyd_step, sqdist_fn=points.sqdist, mean_var=mean_var,
    )


def silhouette(x, labels, sample_size: int = 2000, seed: int = 0) -> float:
    """Mean silhouette coefficient over a random sample of `sample_size` points (euclidean)."""
    x = _points(x)
    labels = np.asarray(labels)
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected ({x.shape[0]},) integers, got {labels.shape} {labels.dtype}")
    if sample_size < 2:
        raise ValueError("sample_size must be >= 2")
    return ref.silhouette(x, labels, sample_size, seed, sqdist_fn=_impl().sqdist)


# ----------------------------------------------------------------------------- attention


def attention(q, K, V) -> tuple[np.ndarray, np.ndarray]:
    """softmax(q·Kᵀ/√d)·V. q (D,)|(Q, D), K (N, D), V (N, Dv) -> out (Dv,)|(Q, Dv) f32 and
    mass (N,)|(Q, N) f32: the softmax weight of each key (sums to 1), for provenance."""
    k = _matrix(K, "K", dtypes=(np.float32,))
    v = _matrix(V, "V", dtypes=(np.float32,))
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"K has {k.shape[0]} rows but V has {v.shape[0]}")
    q2, single = _queries(q, k.shape[1])
    _finite(k, "K")
    _finite(v, "V")
    out, mass = _impl().attention(q2, k, v)
    return (out[0], mass[0]) if single else (out, mass)


def span_mass(probs, spans) -> np.ndarray:
    """Aggregate attention mass (as `attention` returns it, or the model runtime's per-layer probs)
    over key spans: probs (H, N) or (L, H, N) float32, spans (S, 2) [start, end) within N -> (S,) float32,
    the mean over layers and heads of the mass on each span. One prefix-sum pass in NumPy on every
    backend (a few thousand floats per token: nothing to gain from C)."""
    p = np.asarray(probs)
    if p.dtype != np.float32 or p.ndim not in (2, 3) or p.size == 0:
        raise ValueError(f"probs: expected a non-empty (H, N) or (L, H, N) float32 array, got {p.shape} {p.dtype}")
    p = p[None] if p.ndim == 2 else p
    s = np.asarray(spans)
    if s.ndim != 2 or s.shape[1] != 2 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"spans: expected (S, 2) integers, got {s.shape} {s.dtype}")
    if s.size and (s.min() < 0 or s.max() > p.shape[2] or (s[:, 1] < s[:, 0]).any()):
        raise ValueError(f"spans must satisfy 0 <= start <= end <= {p.shape[2]}")
    _finite(p, "probs")
    return ref.span_mass(p, s.astype(np.int64))


# ----------------------------------------------------------------------------- causal


def lagged_xcorr(x, y, max_lag: int) -> np.ndarray:
    """Pearson correlation of x[t] and y[t + lag] for lag = -max_lag..max_lag (index lag + max_lag);
    lag > 0 means x leads y. A constant overlap gives 0. -> (2 * max_lag + 1,) float64."""
    x, y = _series(x, "x"), _series(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if int(max_lag) != max_lag or not 0 <= max_lag <= len(x) - 2:
        raise ValueError(f"max_lag must be an integer in 0..{len(x) - 2}, got {max_lag!r}")
    return _impl().lagged_xcorr(x, y, int(max_lag))


class GrangerResult(tuple):
    """(F, p_value, df_num, df_den) with named fields."""

    __slots__ = ()

    def __new__(cls, f, p_value, df_num, df_den):
        return super().__new__(cls, (f, p_value, df_num, df_den))

    f = property(lambda self: self[0])
    p_value = property(lambda self: self[1])
    df_num = property(lambda self: self[2])
    df_den = property(lambda self: self[3])


def granger_f(x, y, lag: int) -> GrangerResult:
    """F test that lags 1..lag of x improve an OLS prediction of y over y's own lags (with
    intercept). df_num = lag, df_den = T - 3*lag - 1. p from scipy.stats.f, else an incomplete beta."""
    x, y = _series(x, "x"), _series(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    if int(lag) != lag or lag < 1 or len(y) - 3 * lag - 1 < 1:
        raise ValueError(f"lag must be an integer >= 1 with T - 3*lag - 1 >= 1 (T={len(y)}), got {lag!r}")
    rss_r, rss_u, n_obs = _impl().granger_rss(x, y, int(lag))
    return GrangerResult(*ref.granger_from_rss(rss_r, rss_u, n_obs, int(lag)))


# ----------------------------------------------------------------------------- repetition


def repetition_rate(tokens, n: int) -> float:
    """Share of the n-grams of an int token sequence that repeat an earlier n-gram (0 if none)."""
    t = _tokens(tokens)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return float(_impl().repetition_rate(t, int(n)))


def boredom(tokens, max_n: int = 4, distinct_weight: float = 0.25) -> float:
    """0 (fresh) .. 1 (one token repeated):
    distinct_weight * (1 - distinct/T) + (1 - distinct_weight) * mean(repetition_rate(n), n=2..max_n).
    1 - distinct/T equals repetition_rate(tokens, 1)."""
    t = _tokens(tokens)
    if int(max_n) != max_n or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")
    if not 0.0 <= distinct_weight <= 1.0:
        raise ValueError(f"distinct_weight must be in [0, 1], got {distinct_weight!r}")
    impl = _impl()
    distinct_term = impl.repetition_rate(t, 1)
    if max_n < 2:
        return float(distinct_term)
    rep = [impl.repetition_rate(t, n) for n in range(2, int(max_n) + 1)]
    return float(distinct_weight * distinct_term + (1.0 - distinct_weight) * np.mean(rep))


# ----------------------------------------------------------------------------- merkle


def _digests(digests) -> list[bytes]:
    if isinstance(digests, np.ndarray):
        if digests.ndim != 2 or digests.shape[1] != 32 or digests.dtype != np.uint8:
            raise ValueError(f"digests: expected an (N, 32) uint8 array, got {digests.shape} {digests.dtype}")
        out = [bytes(row) for row in digests]
    else:
        out = [bytes(d) for d in digests]
    if not out:
        raise ValueError("digests: empty")
    if any(len(d) != 32 for d in out):
        raise ValueError("digests: every digest must be 32 bytes (SHA-256)")
    return out


def merkle_root(digests) -> bytes:
    """RFC 6962 root of an ordered list of 32-byte digests (list of bytes or (N, 32) uint8)."""
    return _impl().merkle_root(_digests(digests))


def merkle_proof(digests, index: int) -> list[tuple[bytes, bool]]:
    """Audit path of leaf `index`: [(sibling hash, sibling_is_left), ...] from the leaves up."""
    d = _digests(digests)
    if int(index) != index or not 0 <= index < len(d):
        raise ValueError(f"index must be in 0..{len(d) - 1}, got {index!r}")
    return _impl().merkle_proof(d, int(index))


def merkle_verify(leaf: bytes, proof: list[tuple[bytes, bool]], root: bytes) -> bool:
    """True when `leaf` (the 32-byte digest) with `proof` hashes up to `root`."""
    if len(bytes(leaf)) != 32 or len(bytes(root)) != 32:
        raise ValueError("leaf and root must be 32 bytes")
    if any(len(bytes(s)) != 32 for s, _ in proof):
        raise ValueError("proof: every sibling must be 32 bytes")
    return _impl().merkle_verify(bytes(leaf), proof, bytes(root))


class _ReferenceKernels:
    """The reference functions under the kernel signatures that the backends share."""

    @staticmethod
    def scores(q, m, scale, cosine):
        _finite(m, "matrix")
        s = ref.scores(q, _dense(m, scale), "cosine" if cosine else "dot")
        if not np.isfinite(s).all():
            raise ValueError(NONFINITE)
        return s

    @staticmethod
    def topk(q, m, scale, cosine, k):
        return ref.topk_from_scores(_ReferenceKernels.scores(q, m, scale, cosine), k)

    quantize_int8 = staticmethod(ref.quantize_int8)
    moments_of_batch = staticmethod(ref.moments_of_batch)
    lloyd_step = staticmethod(ref.lloyd_step)
    sqdist = staticmethod(ref.sqdist)
    attention = staticmethod(ref.attention)
    lagged_xcorr = staticmethod(ref.lagged_xcorr)
    granger_rss = staticmethod(ref.granger_rss)
    repetition_rate = staticmethod(ref.repetition_rate)
    merkle_root = staticmethod(ref.merkle_root)
    merkle_proof = staticmethod(ref.merkle_proof)
    merkle_verify = staticmethod(ref.merkle_verify)


def _dense(m: np.ndarray, scale) -> np.ndarray:
    # m: (N, D) float16|float32|int8 -> (N, D) float32 (int8 rows dequantized by scale)
    if scale is None:
        return m.astype(np.float32)
    return ref.dequantize_int8(m, scale)


_reference_kernels = _ReferenceKernels


class _CKernels:
    """native._core under the shared kernel signatures."""

    @staticmethod
    def _core():
        from . import _core

        return _core

    @staticmethod
    def scores(q, m, scale, cosine):
        return _CKernels._core().scores(q, m, scale, cosine)

    @staticmethod
    def topk(q, m, scale, cosine, k):
        return _CKernels._core().topk(q, m, scale, cosine, k)

    @staticmethod
    def quantize_int8(m):
        return _CKernels._core().quantize_int8(m)

    @staticmethod
    def moments_of_batch(x, covariance):
        return moments_from_parts(*_CKernels._core().moments_batch(x), x, covariance)

    @staticmethod
    def lloyd_step(x, c):
        return _CKernels._core().lloyd_step(np.ascontiguousarray(x, dtype=np.float32), c)

    @staticmethod
    def sqdist(x, c):
        return _CKernels._core().sqdist(np.ascontiguousarray(x, dtype=np.float32), c)

    @staticmethod
    def attention(q, k, v):
        return _CKernels._core().attention(q, k, v)

    @staticmethod
    def lagged_xcorr(x, y, max_lag):
        return _CKernels._core().lagged_xcorr(x, y, max_lag)

    @staticmethod
    def granger_rss(x, y, lag):
        return _CKernels._core().granger_rss(x, y, lag)

    @staticmethod
    def repetition_rate(tokens, n):
        return _CKernels._core().repetition_rate(tokens, n)

    @staticmethod
    def merkle_root(digests):
        return _CKernels._core().merkle_root(b"".join(digests))

    @staticmethod
    def merkle_proof(digests, index):
        sib, sides = _CKernels._core().merkle_proof(b"".join(digests), index)
        return [(sib[32 * i : 32 * i + 32], bool(side)) for i, side in enumerate(sides)]

    @staticmethod
    def merkle_verify(leaf, proof, root):
        sib = b"".join(bytes(s) for s, _ in proof)
        sides = bytes(int(bool(left)) for _, left in proof)
        return _CKernels._core().merkle_fold(leaf, sib, sides) == root


def moments_from_parts(n, mean, m2, x, covariance) -> MomentState:
    """A batch state from kernel-computed (n, mean, m2); the comoment (if tracked) by BLAS."""
    # mean, m2: (D,) float64; x: (N, D) float
    como = None
    if covariance:
        dev = x.astype(np.float64) - mean  # (N, D) float64
        como = dev.T @ dev
    return MomentState(int(n), mean, m2, como)
