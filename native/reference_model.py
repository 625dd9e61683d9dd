"""NumPy executable specification of the model-math kernels (GGUF quant formats, norms, RoPE, attention).

Short and obviously right; the C and CuPy paths must agree with it within the tolerances stated in
native/tests/test_parity_model.py. Where llama.cpp makes a numerical choice that changes greedy tokens
(8-bit activations before quantized matmuls, f16 KV cache, iterative RoPE angles), this file makes the
same choice, so "reference" also means "what llama.cpp computes" up to float summation order.

Weights are GGUF row-major: a tensor GGUF calls [cols, rows] is (rows, cols) here, rows of
`cols // 32` blocks. A matvec is y = W @ x.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = [
    "QK", "QTYPES", "block_bytes", "row_bytes",
    "dequantize", "quantize_q8_0", "quantize_q8_1", "quantize",
    "matmul_float", "matmul_q8", "matvec_float", "matvec_q8",
    "rms_norm", "layer_norm", "rope_norm", "rope_neox", "softmax", "silu", "swiglu",
    "gelu_erf", "gelu_tanh", "attention_step", "attention_prompt",
]

QK = 32  # values per block for every quantized format here
# name: (bytes per block, values per block)
QTYPES: dict[str, tuple[int, int]] = {
    "F32": (4, 1), "F16": (2, 1), "Q4_0": (18, QK), "Q4_1": (20, QK), "Q8_0": (34, QK), "Q8_1": (36, QK),
}
_ACT_TYPE = {"Q4_0": "Q8_0", "Q8_0": "Q8_0", "Q4_1": "Q8_1"}  # llama.cpp's vec_dot_type on x86


def block_bytes(qtype: str) -> int:
    return QTYPES[qtype][0]


def row_bytes(qtype: str, cols: int) -> int:
    size, per = QTYPES[qtype]
    return cols // per * size


def _blocks(raw, qtype: str, rows: int, cols: int) -> np.ndarray:
    # -> (rows, cols // 32, block_bytes) uint8
    raw = np.frombuffer(raw, dtype=np.uint8)
    return raw.reshape(rows, cols // QK, block_bytes(qtype))


def _f16(b: np.ndarray) -> np.ndarray:
    # b: (..., 2) uint8 -> (...,) float32
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    # qs: (..., 16) uint8 -> (..., 32) int32 in GGML order: low nibbles are values 0..15, high 16..31
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int32)


def _unpack(raw, qtype: str, rows: int, cols: int):
    """-> (scale (rows, nb), offset (rows, nb) or None, ints (rows, nb, 32) int32)."""
    b = _blocks(raw, qtype, rows, cols)
    if qtype == "Q4_0":
        return _f16(b[..., 0:2]), None, _nibbles(b[..., 2:]) - 8
    if qtype == "Q4_1":
        return _f16(b[..., 0:2]), _f16(b[..., 2:4]), _nibbles(b[..., 4:])
    if qtype == "Q8_0":
        return _f16(b[..., 0:2]), None, b[..., 2:].view(np.int8).astype(np.int32)
    if qtype == "Q8_1":
        return _f16(b[..., 0:2]), _f16(b[..., 2:4]), b[..., 4:].view(np.int8).astype(np.int32)
    raise ValueError(f"unsupported qtype {qtype}")


def dequantize(raw, qtype: str, rows: int, cols: int) -> np.ndarray:
    """GGUF bytes -> (rows, cols) float32, exactly as ggml's dequantize_row_*."""
    if qtype == "F32":
        return np.frombuffer(raw, dtype=np.float32).reshape(rows, cols).copy()
    if qtype == "F16":
        return np.frombuffer(raw, dtype=np.float16).reshape(rows, cols).astype(np.float32)
    d, m, q = _unpack(raw, qtype, rows, cols)
    # x = d * q (+ m): (rows, nb, 32)
    x = d[..., None] * q.astype(np.float32)
    if m is not None and qtype == "Q4_1":
        x = x + m[..., None]
    return x.reshape(rows, cols).astype(np.float32)


def _q8_blocks(x: np.ndarray):
    # x: (T, D) float32 -> (d (T, nb) float32 before f16 rounding, q (T, nb, 32) int8)
    xb = x.reshape(x.shape[0], -1, QK)
    amax = np.abs(xb).max(axis=-1)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(xb * inv[..., None]).astype(np.int8)  # round half to even, as _mm256_round_ps
    return d.astype(np.float32), q


def quantize_q8_0(x: np.ndarray) -> bytes:
    """Activations (T, D) float32 -> Q8_0 bytes, as llama.cpp's x86 quantize_row_q8_0."""
    d, q = _q8_blocks(x)
    out = np.empty(q.shape[:2] + (34,), np.uint8)
    out[..., 0:2] = d.astype(np.float16)[..., None].view(np.uint8)
    out[..., 2:] = q.view(np.uint8)
    return out.tobytes()


def quantize_q8_1(x: np.ndarray) -> bytes:
    """Activations (T, D) float32 -> Q8_1 bytes (d, s = d * sum(q), 32 x int8) as llama.cpp's x86 code."""
    d, q = _q8_blocks(x)
    s = (d * q.astype(np.int32).sum(-1).astype(np.float32)).astype(np.float16)  # unrounded d, as llama.cpp
    out = np.empty(q.shape[:2] + (36,), np.uint8)
    out[..., 0:2] = d.astype(np.float16)[..., None].view(np.uint8)
    out[..., 2:4] = s[..., None].view(np.uint8)
    out[..., 4:] = q.view(np.uint8)
    return out.tobytes()


def quantize(x: np.ndarray, qtype: str) -> bytes:
    """Weights (rows, cols) float32 -> GGUF bytes (round-to-nearest, as ggml's quantize_row_*_ref)."""
    xb = x.astype(np.float32).reshape(x.shape[0], -1, QK)
    if qtype == "Q8_0":
        return quantize_q8_0(x)
    if qtype == "Q4_0":
        idx = np.abs(xb).argmax(-1)
        mx = np.take_along_axis(xb, idx[..., None], -1)[..., 0]
        d = mx / np.float32(-8)
        inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.floor(xb * inv[..., None] + np.float32(8.5)), 0, 15).astype(np.uint8)
        head = d.astype(np.float16)[..., None].view(np.uint8)
    elif qtype == "Q4_1":
        lo, hi = xb.min(-1), xb.max(-1)
        d = (hi - lo) / np.float32(15)
        inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.floor((xb - lo[..., None]) * inv[..., None] + np.float32(0.5)), 0, 15).astype(np.uint8)
        head = np.concatenate([d.astype(np.float16)[..., None].view(np.uint8),
                               lo.astype(np.float16)[..., None].view(np.uint8)], -1)
    else:
        raise ValueError(f"cannot quantize to {qtype}")
    packed = q[..., :16] | (q[..., 16:] << 4)
    return np.concatenate([head, packed], -1).astype(np.uint8).tobytes()


def matmul_float(raw, qtype: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    """Y = X @ W.T with float activations. x: (T, cols) float32 -> (T, rows) float32."""
    w = dequantize(raw, qtype, rows, cols).astype(np.float64)  # (rows, cols)
    return (x.astype(np.float64) @ w.T).astype(np.float32)


def matmul_q8(raw, qtype: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    """llama.cpp-compatible: activations quantized to Q8_0/Q8_1 per row of x, integer block dots.

    x: (T, cols) float32 -> (T, rows) float32. For Q4_1: sum_b d_w d_x sum(qw qx) + m_w s_x.
    F32/F16 weights have no quantized path in llama.cpp here and use matmul_float.
    """
    if qtype in ("F32", "F16"):
        return matmul_float(raw, qtype, rows, cols, x)
    act = _ACT_TYPE[qtype]
    T = x.shape[0]
    raw_x = quantize_q8_1(x) if act == "Q8_1" else quantize_q8_0(x)
    dx, sx, qx = _unpack(raw_x, act, T, cols)       # (T, nb), (T, nb)|None, (T, nb, 32)
    dw, mw, qw = _unpack(raw, qtype, rows, cols)    # (rows, nb), (rows, nb)|None, (rows, nb, 32)
    sumi = np.einsum("rbk,tbk->trb", qw.astype(np.int64), qx.astype(np.int64)).astype(np.float64)
    y = (sumi * dw[None].astype(np.float64) * dx[:, None].astype(np.float64)).sum(-1)  # (T, rows)
    if qtype == "Q4_1":
        y = y + (mw[None].astype(np.float64) * sx[:, None].astype(np.float64)).sum(-1)
    return y.astype(np.float32)


def matvec_float(raw, qtype: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    # x: (cols,) float32 -> (rows,) float32
    return matmul_float(raw, qtype, rows, cols, x[None])[0]


def matvec_q8(raw, qtype: str, rows: int, cols: int, x: np.ndarray) -> np.ndarray:
    # x: (cols,) float32 -> (rows,) float32
    return matmul_q8(raw, qtype, rows, cols, x[None])[0]


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    # x: (T, D) float32, w: (D,) float32 -> (T, D); llama.cpp: mean of squares in double, scale in float
    ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    scale = (1.0 / np.sqrt((ms + eps).astype(np.float32))).astype(np.float32)
    return (x * scale) * w


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    # x: (T, D) float32, w, b: (D,) float32 -> (T, D) float32 (biased variance, as torch)
    mu = x.astype(np.float64).mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (((x - mu) / np.sqrt(var + eps)) * w + b).astype(np.float32)


def _rope_angles(pos: np.ndarray, dims: int, base: float) -> np.ndarray:
    # pos: (T,) int -> theta (T, dims // 2) float32, built as llama.cpp does: theta *= base^(-2/dims)
    scale = np.float32(base ** (-2.0 / dims))
    theta = np.empty((pos.shape[0], dims // 2), np.float32)
    t = pos.astype(np.float32)
    for i in range(dims // 2):
        theta[:, i] = t
        t = (t * scale).astype(np.float32)
    return theta


def rope_norm(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """Adjacent-pair rotation (llama.cpp ROPE_TYPE_NORM, used for GGUF llama). x: (T, H, hd) float32."""
    theta = _rope_angles(np.asarray(pos), x.shape[-1], base)[:, None, :]  # (T, 1, hd/2)
    c, s = np.cos(theta), np.sin(theta)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_neox(x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
    """Half-split rotation (NEOX / HF rotate_half). x: (T, H, hd) float32."""
    h = x.shape[-1] // 2
    theta = _rope_angles(np.asarray(pos), x.shape[-1], base)[:, None, :]
    c, s = np.cos(theta), np.sin(theta)
    x0, x1 = x[..., :h], x[..., h:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], -1).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    # x: (..., N) float32 -> (..., N) float32, last axis
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    # x: (...) float32
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right limit, 0
        return (x / (np.float32(1) + np.exp(-x))).astype(np.float32)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    # gate, up: (T, F) float32 -> silu(gate) * up
    return silu(gate) * up


def gelu_erf(x: np.ndarray) -> np.ndarray:
    # x: (...) float32, exact GELU (BERT)
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    # x: (...) float32, tanh approximation (GPT-2, ggml_gelu)
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))).astype(np.float32)


def attention_step(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_ctx: int):
    """One query position over a causal f16 KV cache with grouped-query heads.

    q: (H, hd) float32; k_cache, v_cache: (T_max, Hkv, hd) float16, rows [0, n_ctx) valid.
    Returns out (H, hd) float32 and probs (H, n_ctx) float32. q and the probabilities are rounded to f16
    before their dot products with the f16 cache, as llama.cpp does without flash attention.
    """
    H, hd = q.shape
    group = H // k_cache.shape[1]
    k = k_cache[:n_ctx].astype(np.float32)                      # (n, Hkv, hd)
    v = v_cache[:n_ctx].astype(np.float32)                      # (n, Hkv, hd)
    qh = q.astype(np.float16).astype(np.float32).reshape(-1, group, hd)  # (Hkv, group, hd)
    scores = np.einsum("kgd,nkd->kgn", qh, k) * np.float32(1 / math.sqrt(hd))  # (Hkv, group, n)
    probs = softmax(scores.astype(np.float32))
    p16 = probs.astype(np.float16).astype(np.float32)  # llama.cpp (no flash attention) rounds probs to f16 for V
    out = np.einsum("kgn,nkd->kgd", p16, v)
    return out.reshape(H, hd).astype(np.float32), probs.reshape(H, n_ctx)


def attention_prompt(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: int) -> np.ndarray:
    """Causal attention for T new positions start..start+T-1. q: (T, H, hd) float32 -> (T, H, hd)."""
    return np.stack([attention_step(q[t], k_cache, v_cache, start + t + 1)[0] for t in range(q.shape[0])])
