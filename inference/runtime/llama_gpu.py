"""The llama forward pass on a GPU with CuPy, written against an array namespace `xp` so that the very
same code runs on NumPy to test its logic on machines without one.

Weights are dequantized once, at load, into device memory (float32; q/k/v and gate/up fused into one
matrix each, so a layer is four matrix products); the KV cache is float16 on the device. The numerics
follow the C path (llama.cpp's) except that activations are not rounded to 8 bits before the matrix
products, rounded to 8 bits exactly as llama.cpp's x86 code does, so logits agree with it to float
summation order, not bit for bit. Only logits, the last hidden state and the requested attention rows come
back to the host.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DeviceLlama", "cupy_namespace"]

_QUANTIZED = ("Q4_0", "Q4_1", "Q8_0")  # weights whose matrix products take 8-bit activations


def cupy_namespace():
    from native import cupy_available

    if not cupy_available():
        raise ValueError("backend 'gpu' needs CuPy and a CUDA device, and none was found")
    import cupy

    return cupy


def _to_host(xp, a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and xp is not np else np.asarray(a)


class DeviceLlama:
    """A Llama's weights on the device and its forward pass there; `llama` is the host-side Llama."""

    def __init__(self, llama, xp=None):
        from native import modelmath

        self.xp = xp if xp is not None else cupy_namespace()
        self.config = c = llama.config

        def dense(*names: str):
            ts = [llama.tensors[n] for n in names]
            w = np.concatenate([modelmath.dequantize(t.data, t.qtype, t.rows, t.cols) for t in ts])
            return self.xp.asarray(w), all(t.qtype in _QUANTIZED for t in ts)

        def vector(name: str):
            return self.xp.asarray(np.frombuffer(llama.tensors[name].data, np.float32))

        self.emb = dense("token_embd.weight")[0]
        self.out = dense(llama.output_name)
        self.out_norm = vector("output_norm.weight")
        self.layers = []
        for i in range(c.n_layer):
            b = f"blk.{i}."
            self.layers.append({
                "attn_norm": vector(b + "attn_norm.weight"), "ffn_norm": vector(b + "ffn_norm.weight"),
                "attn_qkv": dense(b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"),
                "attn_output": dense(b + "attn_output.weight"),
                "ffn_gate_up": dense(b + "ffn_gate.weight", b + "ffn_up.weight"),
                "ffn_down": dense(b + "ffn_down.weight")})
        half = c.head_dim // 2
        inv = np.empty(half, np.float32)  # theta_i = pos * base^(-2i/hd), built as llama.cpp does
        t, scale = np.float32(1), np.float32(c.rope_base ** (-2.0 / c.head_dim))
        for i in range(half):
            inv[i] = t
            t = np.float32(t * scale)
        self.inv_freq = self.xp.asarray(inv)

    def new_cache(self, n_ctx: int):
        from .llama import KVCache

        c, xp = self.config, self.xp
        k = xp.zeros((c.n_layer, n_ctx, c.n_head_kv, c.head_dim), xp.float16)
        v = xp.zeros((c.n_layer, c.n_head_kv, c.head_dim, n_ctx), xp.float16)
        return KVCache(k, v)

    # ---- pieces ----
    def _rms(self, x, w):
        xp = self.xp
        ms = (x.astype(xp.float64) ** 2).mean(-1, keepdims=True)
        return x * (1.0 / xp.sqrt((ms + self.config.eps).astype(xp.float32))).astype(xp.float32) * w

    def _q8(self, x):
        """llama.cpp's 8-bit activation rounding (x86 quantize_row_q8_*): per 32 values, q = rint(x * 127 /
        amax), read back as q * f16(amax / 127)."""
        xp = self.xp
        b = x.reshape(x.shape[0], -1, 32)
        amax = xp.abs(b).max(-1, keepdims=True)
        inv = xp.where(amax > 0, np.float32(127) / xp.where(amax > 0, amax, np.float32(1)), np.float32(0))
        d = (amax / np.float32(127)).astype(xp.float16).astype(xp.float32)
        return (xp.rint(b * inv.astype(xp.float32)) * d).reshape(x.shape)

    def _mm(self, x, weight):
        w, quantized = weight
        return (self._q8(x) if quantized else x) @ w.T

    def _rope(self, x, cos, sin):
        # x: (T, heads, hd), adjacent pairs rotated (llama.cpp ROPE_TYPE_NORM)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = self.xp.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def _attend(self, q, cache, i: int, p0: int, n_end: int):
        """q: (T, H, hd) -> out (T, D) and probabilities (T, H, n_end), causal over the cache."""
        xp, c = self.xp, self.config
        T, g = q.shape[0], c.n_head // c.n_head_kv
        k = cache.k[i, :n_end].astype(xp.float32)  # (n, Hkv, hd)
        v = cache.v[i, :, :, :n_end].astype(xp.float32)  # (Hkv, hd, n)
        qh = q.astype(xp.float16).astype(xp.float32).reshape(T, c.n_head_kv, g, c.head_dim)
        scores = xp.einsum("tkgd,nkd->tkgn", qh, k) * np.float32(1 / math.sqrt(c.head_dim))
        if T > 1:
            allowed = xp.arange(n_end)[None, :] <= (p0 + xp.arange(T))[:, None]  # (T, n)
            scores = xp.where(allowed[:, None, None, :], scores, np.float32(-np.inf))
        e = xp.exp(scores - scores.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True, dtype=xp.float64)).astype(xp.float32)
        out = xp.einsum("tkgn,kdn->tkgd", probs.astype(xp.float16).astype(xp.float32), v)
        return out.reshape(T, c.dim), probs.reshape(T, c.n_head, n_end)

    def _layer(self, i: int, h, cache, p0: int, cos, sin, want_attention: bool):
        xp, c, L = self.xp, self.config, self.layers[i]
        T, kv = h.shape[0], c.n_head_kv * c.head_dim
        qkv = self._mm(self._rms(h, L["attn_norm"]), L["attn_qkv"])
        q = self._rope(qkv[:, :c.dim].reshape(T, c.n_head, c.head_dim), cos, sin)
        k = self._rope(qkv[:, c.dim:c.dim + kv].reshape(T, c.n_head_kv, c.head_dim), cos, sin)
        cache.k[i, p0:p0 + T] = k.astype(xp.float16)
        v = qkv[:, c.dim + kv:].reshape(T, c.n_head_kv, c.head_dim).transpose(1, 2, 0)
        cache.v[i, :, :, p0:p0 + T] = v.astype(xp.float16)
        att, probs = self._attend(q, cache, i, p0, p0 + T)
        h = h + self._mm(att, L["attn_output"])
        gu = self._mm(self._rms(h, L["ffn_norm"]), L["ffn_gate_up"])
        gate, up = gu[:, :c.ffn], gu[:, c.ffn:]
        h = h + self._mm(gate / (np.float32(1) + xp.exp(-gate)) * up, L["ffn_down"])
        return h, (probs[-1] if want_attention else None)

    # ---- forward ----
    def forward(self, toks: np.ndarray, cache, layers: list[int], all_positions: bool):
        """Append `toks` at cache.n..; -> (logits, hidden, {layer: (H, n) probs}) as host arrays."""
        xp = self.xp
        p0, T = cache.n, int(toks.size)
        theta = xp.asarray(np.arange(p0, p0 + T, dtype=np.float32))[:, None] * self.inv_freq[None, :]
        cos, sin = xp.cos(theta)[:, None, :], xp.sin(theta)[:, None, :]
        h = self.emb[xp.asarray(toks.astype(np.int64))]
        attention = {}
        for i in range(self.config.n_layer):
            h, probs = self._layer(i, h, cache, p0, cos, sin, i in layers)
            if probs is not None:
                attention[i] = _to_host(xp, probs)
        cache.n = p0 + T
        last = h if all_positions else h[-1:]
        logits = self._mm(self._rms(last, self.out_norm), self.out)
        logits, hidden = _to_host(xp, logits), _to_host(xp, last)
        if all_positions:
            return logits, hidden, attention
        return logits[0], hidden[0], attention
