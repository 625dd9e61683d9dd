"""Model math: GGUF quantized matmuls, norms, RoPE, activations and KV-cache attention.

Every function validates its inputs (ValueError with the reason) and dispatches to the backend in force
(`native._backend.backend()`: 'c', 'cupy' or 'reference'). `native.reference_model` is the specification;
tests hold the other backends to it.

Quantized weights are GGUF block bytes, row-major: a (rows, cols) matrix is `rows` rows of
`cols // 32` blocks. `matmul(raw, qtype, rows, cols, x)` computes x @ W.T without materialising W.
With `quantized_activations=True` (the default, what llama.cpp does) x is first rounded to 8-bit
Q8_1/Q8_0 blocks and the block dot products are integer sums.
"""
from __future__ import annotations

import numpy as np

from . import reference_model as _ref
from ._backend import (
    backend_for as backend,  # model math copies weights per call: GPU only when forced
)

__all__ = [
    "QTYPES", "row_bytes", "dequantize", "quantize", "quantize_activations", "matmul", "matvec",
    "rms_norm", "layer_norm", "rope", "softmax", "silu", "swiglu", "gelu", "attention_step",
]

QTYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
_CODES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q8_1": 9}
_ROWWISE = {"rms_norm": 0, "layer_norm": 1, "softmax": 2, "silu": 3, "gelu_erf": 4, "gelu_tanh": 5, "swiglu": 6}


def _c():
    from . import _quant

    return _quant


def _gpu():
    from . import _cupy_model

    return _cupy_model


# ---- validation ----
def _qtype(qtype: str) -> str:
    if qtype not in QTYPES:
        raise ValueError(f"qtype must be one of {QTYPES}, got {qtype!r}")
    return qtype


def row_bytes(qtype: str, cols: int) -> int:
    """Bytes of one row of `cols` values in `qtype`."""
    _qtype(qtype)
    return _ref.row_bytes(qtype, cols)


def _raw(raw, qtype: str, rows: int, cols: int) -> np.ndarray:
    _qtype(qtype)
    if not (isinstance(rows, (int, np.integer)) and isinstance(cols, (int, np.integer))) or rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be positive integers, got {rows!r}, {cols!r}")
    per = _ref.QTYPES[qtype][1]
    if cols % per:
        raise ValueError(f"{qtype} needs cols to be a multiple of {per}, got {cols}")
    try:
        buf = np.frombuffer(raw, dtype=np.uint8)
    except TypeError:
        raise ValueError("raw must be a bytes-like object (bytes, memoryview, uint8 array)") from None
    want = rows * _ref.row_bytes(qtype, cols)
    if buf.nbytes != want:
        raise ValueError(f"{qtype} ({rows}, {cols}) needs {want} bytes, got {buf.nbytes}")
    return buf


def _f32(x, name: str, ndim: int | tuple[int, ...], *, finite: bool = True) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {a.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if finite and not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(a)


# ---- quantized matrices ----
def dequantize(raw, qtype: str, rows: int, cols: int) -> np.ndarray:
    """GGUF bytes -> (rows, cols) float32."""
    buf = _raw(raw, qtype, rows, cols)
    b = backend()
    if b == "c":
        out = np.empty((rows, cols), np.float32)
        _c().dequantize(buf, _CODES[qtype], rows, cols, out)
        return out
    if b == "cupy":
        return _gpu().dequantize(buf, qtype, rows, cols)
    return _ref.dequantize(buf, qtype, rows, cols)


def quantize(w: np.ndarray, qtype: str) -> bytes:
    """(rows, cols) float32 -> GGUF bytes (Q4_0, Q4_1, Q8_0; ggml's reference rounding)."""
    w = _f32(w, "w", 2)
    if qtype not in ("Q4_0", "Q4_1", "Q8_0"):
        raise ValueError(f"can quantize to Q4_0, Q4_1 or Q8_0, not {qtype!r}")
    if w.shape[1] % 32:
        raise ValueError(f"cols must be a multiple of 32, got {w.shape[1]}")
    return _ref.quantize(w, qtype)


def quantize_activations(x: np.ndarray, act_qtype: str = "Q8_1") -> bytes:
    """(T, D) float32 activations -> Q8_1 or Q8_0 block bytes, exactly as llama.cpp's x86 code."""
    x = _f32(x, "x", 2)
    if act_qtype not in ("Q8_0", "Q8_1"):
        raise ValueError(f"act_qtype must be Q8_0 or Q8_1, got {act_qtype!r}")
    if x.shape[1] % 32:
        raise ValueError(f"D must be a multiple of 32, got {x.shape[1]}")
    if backend() == "c":
        out = np.empty(x.shape[0] * _ref.row_bytes(act_qtype, x.shape[1]), np.uint8)
        _c().quantize_act(x, _CODES[act_qtype], x.shape[0], x.shape[1], out)
        return out.tobytes()
    return _ref.quantize_q8_1(x) if act_qtype == "Q8_1" else _ref.quantize_q8_0(x)


def matmul(raw, qtype: str, rows: int, cols: int, x: np.ndarray, *, quantized_activations: bool = True) -> np.ndarray:
    """x (T, cols) float32 @ W.T -> (T, rows) float32, W given as GGUF bytes."""
    buf = _raw(raw, qtype, rows, cols)
    x = _f32(x, "x", 2)
    if x.shape[1] != cols:
        raise ValueError(f"x has {x.shape[1]} columns, the matrix has {cols}")
    b = backend()
    if b == "c":
        out = np.empty((x.shape[0], rows), np.float32)
        _c().matmul(buf, _CODES[qtype], rows, cols, x, x.shape[0], out, bool(quantized_activations))
        return out
    if b == "cupy":
        return _gpu().matmul(buf, qtype, rows, cols, x, quantized_activations)
    fn = _ref.matmul_q8 if quantized_activations else _ref.matmul_float
    return fn(buf, qtype, rows, cols, x)


def matvec(raw, qtype: str, rows: int, cols: int, x: np.ndarray, *, quantized_activations: bool = True) -> np.ndarray:
    """W @ x for x (cols,) float32 -> (rows,) float32."""
    x = _f32(x, "x", 1)
    return matmul(raw, qtype, rows, cols, x[None], quantized_activations=quantized_activations)[0]


# ---- row-wise ops ----
def _rowwise(op: str, x: np.ndarray, w=None, b=None, eps: float = 0.0) -> np.ndarray:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    be = backend()
    if be == "c":
        out = np.empty_like(x2)
        _c().rowwise(_ROWWISE[op], x2, w, b, x2.shape[0], x2.shape[1], float(eps), out)
        return out.reshape(shape)
    if be == "cupy":
        return _gpu().rowwise(op, x2, w, b, eps).reshape(shape)
    ref = {"rms_norm": lambda: _ref.rms_norm(x2, w, eps), "layer_norm": lambda: _ref.layer_norm(x2, w, b, eps),
           "softmax": lambda: _ref.softmax(x2), "silu": lambda: _ref.silu(x2),
           "gelu_erf": lambda: _ref.gelu_erf(x2), "gelu_tanh": lambda: _ref.gelu_tanh(x2),
           "swiglu": lambda: _ref.swiglu(x2, w.reshape(x2.shape))}[op]
    return ref().reshape(shape)


def _eps(eps: float) -> float:
    if not (isinstance(eps, (int, float)) and 0 <= eps < 1):
        raise ValueError(f"eps must be a number in [0, 1), got {eps!r}")
    return float(eps)


def _vec(w, name: str, d: int) -> np.ndarray:
    w = _f32(w, name, 1)
    if w.shape[0] != d:
        raise ValueError(f"{name} has {w.shape[0]} values, x rows have {d}")
    return w


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """x (..., D) float32 * w (D,) / rms(x) -> (..., D)."""
    x = _f32(x, "x", (1, 2, 3))
    return _rowwise("rms_norm", x, _vec(w, "w", x.shape[-1]), None, _eps(eps))


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(x - mean) / std * w + b over the last axis; x (..., D) float32."""
    x = _f32(x, "x", (1, 2, 3))
    return _rowwise("layer_norm", x, _vec(w, "w", x.shape[-1]), _vec(b, "b", x.shape[-1]), _eps(eps))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; x (..., N) float32 (-inf allowed, NaN not)."""
    x = np.asarray(x)
    if x.dtype == np.float32 and np.isnan(x).any():
        raise ValueError("x contains NaN")
    x = _f32(x, "x", (1, 2, 3), finite=False)
    if np.isneginf(x.max(-1)).any():
        raise ValueError("a softmax row is entirely -inf")
    return _rowwise("softmax", x)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), x (...) float32."""
    return _rowwise("silu", _f32(x, "x", (1, 2, 3)))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up, both (T, F) float32."""
    gate, up = _f32(gate, "gate", (1, 2)), _f32(up, "up", (1, 2))
    if gate.shape != up.shape:
        raise ValueError(f"gate {gate.shape} and up {up.shape} differ")
    return _rowwise("swiglu", gate, up)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """GELU: approximate='none' (erf, BERT) or 'tanh' (GPT-2, ggml_gelu)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return _rowwise("gelu_erf" if approximate == "none" else "gelu_tanh", _f32(x, "x", (1, 2, 3)))


def rope(x: np.ndarray, positions, base: float = 10000.0, mode: str = "norm") -> np.ndarray:
    """Rotary embedding of x (T, H, hd) float32 at integer positions (T,).

    mode 'norm' rotates adjacent pairs (llama.cpp's LLAMA rope; GGUF llama weights are permuted for it),
    'neox' rotates the two halves (HF rotate_half).
    """
    x = _f32(x, "x", 3)
    pos = np.asarray(positions)
    if pos.shape != (x.shape[0],) or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"positions must be {x.shape[0]} integers, got {pos.dtype} {pos.shape}")
    if x.shape[-1] % 2:
        raise ValueError(f"head dim must be even, got {x.shape[-1]}")
    if mode not in ("norm", "neox"):
        raise ValueError(f"mode must be 'norm' or 'neox', got {mode!r}")
    if not (isinstance(base, (int, float)) and base > 1):
        raise ValueError(f"base must be > 1, got {base!r}")
    be = backend()
    if be == "c":
        out = x.copy()
        _c().rope(out, np.ascontiguousarray(pos, np.int64), x.shape[0], x.shape[1], x.shape[2], float(base), mode == "neox")
        return out
    if be == "cupy":
        return _gpu().rope(x, pos, float(base), mode)
    return (_ref.rope_norm if mode == "norm" else _ref.rope_neox)(x, pos, float(base))


def attention_step(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal GQA attention of one position over an f16 cache.

    q (H, hd) float32; k_cache, v_cache (T_max, Hkv, hd) float16 with rows [0, n_ctx) valid.
    Returns out (H, hd) float32 and the attention probabilities (H, n_ctx) float32.
    """
    q = _f32(q, "q", 2)
    for name, c in (("k_cache", k_cache), ("v_cache", v_cache)):
        if not isinstance(c, np.ndarray) or c.dtype != np.float16 or c.ndim != 3:
            raise ValueError(f"{name} must be a (T_max, Hkv, hd) float16 array")
    if k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache {k_cache.shape} and v_cache {v_cache.shape} differ")
    t_max, hkv, hd = k_cache.shape
    if q.shape[1] != hd or q.shape[0] % hkv:
        raise ValueError(f"q {q.shape} does not fit a cache with {hkv} heads of {hd}")
    if not (isinstance(n_ctx, (int, np.integer)) and 1 <= n_ctx <= t_max):
        raise ValueError(f"n_ctx must be in [1, {t_max}], got {n_ctx!r}")
    be = backend()
    if be == "c":
        if hd > 256:
            raise ValueError("head dim above 256 is not supported")
        out = np.empty_like(q)
        probs = np.empty((q.shape[0], n_ctx), np.float32)
        _c().attention_step(q, np.ascontiguousarray(k_cache), np.ascontiguousarray(v_cache),
                            q.shape[0], hkv, hd, t_max, int(n_ctx), out, probs)
        return out, probs
    if be == "cupy":
        return _gpu().attention_step(q, k_cache, v_cache, int(n_ctx))
    return _ref.attention_step(q, k_cache, v_cache, int(n_ctx))
