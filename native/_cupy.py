"""GPU path of native.vector with CuPy (cuBLAS matmuls plus a few element-wise kernels).

CuPy is imported on first use only, so `import native` works on machines without it. Inputs and
outputs are NumPy arrays (the public API is NumPy-based); each call copies its operands to the
device. Kernels with no data parallelism worth a GPU (lagged cross-correlation, Granger OLS,
n-gram repetition, Merkle hashing) run on the C core, or the reference when it is not built.
Results follow native/reference.py: top-k ties go to the lower index, cosine of a zero vector is 0.
"""
from __future__ import annotations

import math

import numpy as np

from . import reference as ref

NONFINITE = "non-finite score: NaN/inf in the input (or overflow)"
QUERY_BATCH = 1024  # queries scored at once: bounds the (Q, N) score matrix on the device


def _cp():
    import cupy

    return cupy


def _inv_norms(x):
    # x: (N, D) float32 device -> (N,) float32: 1/||row||, 0 for a zero row
    cp = _cp()
    n = cp.sqrt((x.astype(cp.float64) ** 2).sum(axis=1))
    return cp.where(n > 0, 1.0 / cp.where(n > 0, n, 1.0), 0.0).astype(cp.float32)


def _device_rows(m, scale, cosine):
    """(N, D) float32 rows on the device and the per-row score factor (or None)."""
    cp = _cp()
    rows = cp.asarray(m).astype(cp.float32, copy=False)
    if cosine:
        return rows, _inv_norms(rows)  # an int8 row's scale cancels in the cosine
    if scale is not None:
        return rows, cp.asarray(scale, dtype=cp.float32)
    return rows, None


def _device_scores(qd, rows, factor, cosine):
    # qd: (Q, D) float32 device; rows: (N, D) float32 device -> (Q, N) float32 device
    cp = _cp()
    if cosine:
        qd = qd * _inv_norms(qd)[:, None]
    s = qd @ rows.T
    if factor is not None:
        s *= factor[None, :]
    if not bool(cp.isfinite(s).all()):
        raise ValueError(NONFINITE)
    return s


def _scatter_add(cp, a, idx, v):
    if hasattr(cp.add, "at"):  # CuPy >= 13; cupyx.scatter_add is deprecated there
        cp.add.at(a, idx, v)
    else:
        import cupyx

        cupyx.scatter_add(a, idx, v)


def _lloyd_step(xd, c):
    # xd: (N, D) float32 device; c: (K, D) host -> labels, min sq. distances, per-cluster sums, counts
    cp = _cp()
    cd = cp.asarray(c, dtype=cp.float64)
    d = _device_sqdist(xd, cd)  # (N, K) float64
    labels = cp.argmin(d, axis=1)
    mindist = d[cp.arange(len(labels)), labels]
    k = cd.shape[0]
    sums = cp.zeros((k, xd.shape[1]), dtype=cp.float64)
    _scatter_add(cp, sums, labels, xd.astype(cp.float64))
    counts = cp.bincount(labels, minlength=k)
    return (cp.asnumpy(labels).astype(np.int64), cp.asnumpy(mindist), cp.asnumpy(sums),
            cp.asnumpy(counts).astype(np.int64))


def _sqdist(xd, c):
    # xd: (N, D) float32 device; c: (K, D) host -> (N, K) float64 host squared distances
    cp = _cp()
    return cp.asnumpy(_device_sqdist(xd, cp.asarray(c, dtype=cp.float64)))


class _Resident:
    """The points of one k-means run copied to the device once: steps and distances over those
    points reuse the copy; other arrays (mini-batches, k-means++ candidates) are copied per call."""

    def __init__(self, x):
        self.x = x
        self.xd = _cp().asarray(x, dtype=_cp().float32)

    def _device(self, x):
        return self.xd if x is self.x else _cp().asarray(x, dtype=_cp().float32)

    def lloyd_step(self, x, c):
        return _lloyd_step(self._device(x), c)

    def sqdist(self, x, c):
        return _sqdist(self._device(x), c)


class CupyKernels:
    """The GPU kernels under the signatures shared with the C and reference backends."""

    @staticmethod
    def scores(q, m, scale, cosine):
        cp = _cp()
        rows, factor = _device_rows(m, scale, cosine)
        out = [cp.asnumpy(_device_scores(cp.asarray(q[i : i + QUERY_BATCH]), rows, factor, cosine))
               for i in range(0, len(q), QUERY_BATCH)]
        return np.concatenate(out)

    @staticmethod
    def topk(q, m, scale, cosine, k):
        cp = _cp()
        rows, factor = _device_rows(m, scale, cosine)
        k = min(k, rows.shape[0])
        idx, val = [], []
        for i in range(0, len(q), QUERY_BATCH):
            s = _device_scores(cp.asarray(q[i : i + QUERY_BATCH]), rows, factor, cosine)
            order = cp.argsort(-s, axis=1)[:, :k]  # CuPy's sort is stable: ties keep the lower index
            idx.append(cp.asnumpy(order).astype(np.int64))
            val.append(cp.asnumpy(cp.take_along_axis(s, order, axis=1)))
        return np.concatenate(idx), np.concatenate(val)

    @staticmethod
    def quantize_int8(m):
        cp = _cp()
        md = cp.asarray(m, dtype=cp.float32)
        scale = (cp.abs(md).max(axis=1) / cp.float32(127.0)).astype(cp.float32)
        safe = cp.where(scale > 0, scale, cp.float32(1.0))
        q = cp.clip(cp.rint(md / safe[:, None]), -127, 127).astype(cp.int8)
        return cp.asnumpy(q), cp.asnumpy(scale)

    @staticmethod
    def moments_of_batch(x, covariance):
        cp = _cp()
        xd = cp.asarray(x).astype(cp.float64)
        mean = xd.mean(axis=0)
        dev = xd - mean
        como = cp.asnumpy(dev.T @ dev) if covariance else None
        return ref.MomentState(int(x.shape[0]), cp.asnumpy(mean), cp.asnumpy((dev * dev).sum(axis=0)), como)

    @staticmethod
    def lloyd_step(x, c):
        return _lloyd_step(_cp().asarray(x, dtype=_cp().float32), c)

    @staticmethod
    def sqdist(x, c):
        return _sqdist(_cp().asarray(x, dtype=_cp().float32), c)

    @staticmethod
    def resident(x):
        return _Resident(x)

    @staticmethod
    def attention(q, k, v):
        cp = _cp()
        qd, kd = cp.asarray(q, dtype=cp.float32), cp.asarray(k, dtype=cp.float32)
        s = (qd @ kd.T).astype(cp.float64) / math.sqrt(q.shape[1])  # (Q, N)
        w = cp.exp(s - s.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        out = w @ cp.asarray(v, dtype=cp.float64)
        return cp.asnumpy(out).astype(np.float32), cp.asnumpy(w).astype(np.float32)

    @staticmethod
    def lagged_xcorr(x, y, max_lag):
        return _cpu().lagged_xcorr(x, y, max_lag)

    @staticmethod
    def granger_rss(x, y, lag):
        return _cpu().granger_rss(x, y, lag)

    @staticmethod
    def repetition_rate(tokens, n):
        return _cpu().repetition_rate(tokens, n)

    @staticmethod
    def merkle_root(digests):
        return _cpu().merkle_root(digests)

    @staticmethod
    def merkle_proof(digests, index):
        return _cpu().merkle_proof(digests, index)

    @staticmethod
    def merkle_verify(leaf, proof, root):
        return _cpu().merkle_verify(leaf, proof, root)


def _device_sqdist(xd, cd):
    # xd: (N, D) float32 device; cd: (M, D) float64 device -> (N, M) float64 device, >= 0
    cp = _cp()
    c32 = cd.astype(cp.float32)
    xn = (xd.astype(cp.float64) ** 2).sum(axis=1)
    cn = (c32.astype(cp.float64) ** 2).sum(axis=1)
    d = xn[:, None] + cn[None, :] - 2.0 * (xd @ c32.T).astype(cp.float64)
    return cp.maximum(d, 0.0)


def _cpu():
    """The CPU kernels for the sequential parts: the C core if built, else the reference."""
    from . import vector
    from ._backend import c_available

    return vector._CKernels if c_available() else vector._reference_kernels


try:
    from ._cupy_model import *  # noqa: F401,F403  (model math, owned by the model-math half)
except ImportError:
    pass
