"""CuPy (GPU) path for the model-math kernels; the same formulas as native.reference_model.

cupy is imported lazily so this module imports on machines without a GPU; `native.cupy_available()`
says whether it can run. Inputs and outputs are NumPy arrays (the public API's contract); weights are
unpacked from GGUF block bytes on the device.
"""
from __future__ import annotations

import math

import numpy as np

from . import reference_model as _ref

_ACT = {"Q4_0": "Q8_0", "Q8_0": "Q8_0", "Q4_1": "Q8_1"}


def _cp():
    import cupy

    return cupy


def _unpack(buf: np.ndarray, qtype: str, rows: int, cols: int):
    """GGUF block bytes -> (scale (rows, nb), offset (rows, nb) | None, ints (rows, nb, 32) int32) on device."""
    cp = _cp()
    b = cp.asarray(buf).reshape(rows, cols // 32, _ref.block_bytes(qtype))

    def f16(lo):
        return b[..., lo:lo + 2].copy().view(cp.float16)[..., 0].astype(cp.float32)

    def nib(qs):
        return cp.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(cp.int32)

    if qtype == "Q4_0":
        return f16(0), None, nib(b[..., 2:]) - 8
    if qtype == "Q4_1":
        return f16(0), f16(2), nib(b[..., 4:])
    if qtype == "Q8_0":
        return f16(0), None, b[..., 2:].copy().view(cp.int8).astype(cp.int32)
    if qtype == "Q8_1":
        return f16(0), f16(2), b[..., 4:].copy().view(cp.int8).astype(cp.int32)
    raise ValueError(qtype)


def _dequantize_dev(buf: np.ndarray, qtype: str, rows: int, cols: int):
    cp = _cp()
    if qtype == "F32":
        return cp.asarray(buf).view(cp.float32).reshape(rows, cols)
    if qtype == "F16":
        return cp.asarray(buf).view(cp.float16).reshape(rows, cols).astype(cp.float32)
    d, m, q = _unpack(buf, qtype, rows, cols)
    x = d[..., None] * q.astype(cp.float32)
    if qtype == "Q4_1":
        x = x + m[..., None]
    return x.reshape(rows, cols)


def dequantize(buf: np.ndarray, qtype: str, rows: int, cols: int) -> np.ndarray:
    return _cp().asnumpy(_dequantize_dev(buf, qtype, rows, cols)).astype(np.float32)


def matmul(buf: np.ndarray, qtype: str, rows: int, cols: int, x: np.ndarray, quantized: bool) -> np.ndarray:
    cp = _cp()
    if not quantized or qtype in ("F32", "F16"):
        w = _dequantize_dev(buf, qtype, rows, cols).astype(cp.float64)
        return cp.asnumpy(cp.asarray(x, cp.float64) @ w.T).astype(np.float32)
    act = _ACT[qtype]
    # activation rounding is tiny and must match llama.cpp bit for bit: do it on the host
    raw_x = _ref.quantize_q8_1(x) if act == "Q8_1" else _ref.quantize_q8_0(x)
    dx, sx, qx = _unpack(np.frombuffer(raw_x, np.uint8), act, x.shape[0], cols)
    dw, mw, qw = _unpack(buf, qtype, rows, cols)
    sumi = cp.einsum("rbk,tbk->trb", qw.astype(cp.float64), qx.astype(cp.float64))  # exact in float64
    y = (sumi * dw[None].astype(cp.float64) * dx[:, None].astype(cp.float64)).sum(-1)
    if qtype == "Q4_1":
        y = y + (mw[None].astype(cp.float64) * sx[:, None].astype(cp.float64)).sum(-1)
    return cp.asnumpy(y).astype(np.float32)


def rowwise(op: str, x: np.ndarray, w, b, eps: float) -> np.ndarray:
    cp = _cp()
    xd = cp.asarray(x)
    if op == "rms_norm":
        ms = (xd.astype(cp.float64) ** 2).mean(-1, keepdims=True)
        y = xd * (1.0 / cp.sqrt((ms + eps).astype(cp.float32))).astype(cp.float32) * cp.asarray(w)
    elif op == "layer_norm":
        mu = xd.astype(cp.float64).mean(-1, keepdims=True)
        var = ((xd - mu) ** 2).mean(-1, keepdims=True)
        y = (xd - mu) / cp.sqrt(var + eps) * cp.asarray(w) + cp.asarray(b)
    elif op == "softmax":
        e = cp.exp(xd - xd.max(-1, keepdims=True))
        y = e / e.sum(-1, keepdims=True, dtype=cp.float64)
    elif op == "silu":
        y = xd / (1 + cp.exp(-xd))
    elif op == "swiglu":
        y = xd / (1 + cp.exp(-xd)) * cp.asarray(w).reshape(xd.shape)
    elif op == "gelu_erf":
        from cupyx.scipy.special import erf

        x64 = xd.astype(cp.float64)
        y = 0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))
    elif op == "gelu_tanh":
        x64 = xd.astype(cp.float64)
        y = 0.5 * x64 * (1.0 + cp.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))
    else:
        raise ValueError(op)
    return cp.asnumpy(y).astype(np.float32)


def rope(x: np.ndarray, pos: np.ndarray, base: float, mode: str) -> np.ndarray:
    cp = _cp()
    theta = cp.asarray(_ref._rope_angles(np.asarray(pos), x.shape[-1], base))[:, None, :]  # (T, 1, hd/2)
    c, s = cp.cos(theta), cp.sin(theta)
    xd = cp.asarray(x)
    if mode == "norm":
        x0, x1 = xd[..., 0::2], xd[..., 1::2]
        out = cp.empty_like(xd)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
    else:
        h = x.shape[-1] // 2
        x0, x1 = xd[..., :h], xd[..., h:]
        out = cp.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], -1)
    return cp.asnumpy(out).astype(np.float32)


def attention_step(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_ctx: int):
    cp = _cp()
    H, hd = q.shape
    group = H // k_cache.shape[1]
    k = cp.asarray(k_cache[:n_ctx]).astype(cp.float32)
    v = cp.asarray(v_cache[:n_ctx]).astype(cp.float32)
    qh = cp.asarray(q).astype(cp.float16).astype(cp.float32).reshape(-1, group, hd)
    scores = cp.einsum("kgd,nkd->kgn", qh, k) * np.float32(1 / math.sqrt(hd))
    e = cp.exp(scores - scores.max(-1, keepdims=True))
    probs = (e / e.sum(-1, keepdims=True, dtype=cp.float64)).astype(cp.float32)
    out = cp.einsum("kgn,nkd->kgd", probs.astype(cp.float16).astype(cp.float32), v)
    return cp.asnumpy(out.reshape(H, hd)).astype(np.float32), cp.asnumpy(probs.reshape(H, n_ctx))
