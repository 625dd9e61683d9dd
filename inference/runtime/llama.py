"""Llama decoder over GGUF tensor bytes: KV cache, batched prompt processing, one-token decode.

Weights come from a tensor source (name -> Tensor(qtype, shape, raw bytes)), so the same model runs from
a GGUF file or from content-addressed blobs. The fast path runs the whole stack in C
(`native._quant.llama_forward`); `backend="reference"` runs the same math with NumPy kernels from
native.reference_model, as an executable check of the C path; `backend="gpu"` runs it on a GPU with the
weights resident there (inference/runtime/llama_gpu.py): 6x the C path's prompt throughput on an H200, but
decode is bound by CuPy's per-operation overhead, so it is opt-in (HARTONOMOUS_LLM_BACKEND=gpu), for
prompt-heavy work such as scoring and kNN-LM datastore builds.

Numerics follow llama.cpp (8-bit activations before quantized matmuls, f16 KV cache, adjacent-pair RoPE),
so greedy tokens agree with llama.cpp on the same file.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from native import reference_model as R

from .gguf_reader import Tensor, TensorSource

__all__ = ["ForwardResult", "KVCache", "Llama", "LlamaConfig"]

_QTYPE_CODES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8}
_LAYER_WEIGHTS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class LlamaConfig:
    n_layer: int
    dim: int
    ffn: int
    n_head: int
    n_head_kv: int
    vocab: int
    context_length: int
    eps: float
    rope_base: float

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_metadata(cls, meta: dict, vocab: int) -> LlamaConfig:
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"not a llama model: general.architecture={arch!r}")
        p = "llama."
        return cls(
            n_layer=int(meta[p + "block_count"]), dim=int(meta[p + "embedding_length"]),
            ffn=int(meta[p + "feed_forward_length"]), n_head=int(meta[p + "attention.head_count"]),
            n_head_kv=int(meta.get(p + "attention.head_count_kv", meta[p + "attention.head_count"])),
            vocab=vocab, context_length=int(meta.get(p + "context_length", 2048)),
            eps=float(meta.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(meta.get(p + "rope.freq_base", 10000.0)),
        )


@dataclass
class KVCache:
    """f16 keys and values for every layer, `n` positions filled.

    k: (n_layer, n_ctx, n_head_kv, head_dim) float16; v: (n_layer, n_head_kv, head_dim, n_ctx) float16
    (values transposed, as llama.cpp keeps them, so the probability-weighted sum reads contiguously).
    """

    k: np.ndarray
    v: np.ndarray
    n: int = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def values(self, layer: int) -> np.ndarray:
        """(n, n_head_kv, head_dim) float16 view of one layer's filled values."""
        return self.v[layer, :, :, :self.n].transpose(2, 0, 1)

    def reset(self) -> None:
        self.n = 0


@dataclass
class ForwardResult:
    logits: np.ndarray  # (vocab,) float32, last position; (T, vocab) with all_positions
    hidden: np.ndarray  # (dim,) float32, last position, before the output norm; (T, dim) with all_positions
    attention: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (n_head, n_ctx) float32


class Llama:
    """A llama-architecture decoder. `forward(tokens, cache)` appends tokens to the cache."""

    def __init__(self, tensors: TensorSource, config: LlamaConfig, *, n_ctx: int = 2048,
                 n_batch: int = 512, kv_pad: int = 256, backend: str = "auto", xp=None):
        if not 1 <= n_ctx <= config.context_length:
            raise ValueError(f"n_ctx must be in [1, {config.context_length}], got {n_ctx}")
        if backend not in ("auto", "c", "reference", "gpu"):
            raise ValueError(f"backend must be auto|c|reference|gpu, got {backend!r}")
        if n_batch < 1 or kv_pad < 1:
            raise ValueError("n_batch and kv_pad must be >= 1")
        self.config, self.n_ctx, self.n_batch, self.kv_pad = config, n_ctx, n_batch, kv_pad
        self.tensors = tensors
        self.output_name = "output.weight" if "output.weight" in tensors else "token_embd.weight"  # tied
        self._check_shapes()
        self._c_model = self._device = None
        if backend == "gpu":
            from .llama_gpu import DeviceLlama

            self._device = DeviceLlama(self, xp)  # xp=numpy runs the device code on the host (tests)
            self.backend = "gpu"
            return
        if backend in ("auto", "c"):
            try:
                from native import _quant
            except ImportError:
                if backend == "c":
                    raise
            else:
                self._quant = _quant
                self._c_model = _quant.llama_new(self._c_config(), self._c_weights())
        self.backend = "c" if self._c_model is not None else "reference"

    @classmethod
    def from_gguf(cls, gguf_file, **kwargs) -> Llama:
        vocab = gguf_file.tensors["token_embd.weight"].shape[0]
        return cls(gguf_file.tensors, LlamaConfig.from_metadata(gguf_file.metadata, vocab), **kwargs)

    # ---- weights ----
    def _t(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise ValueError(f"tensor source has no {name!r}") from None

    def _check_shapes(self) -> None:
        c = self.config
        kv = c.n_head_kv * c.head_dim
        want = {"attn_norm": (c.dim,), "attn_q": (c.dim, c.dim), "attn_k": (kv, c.dim), "attn_v": (kv, c.dim),
                "attn_output": (c.dim, c.dim), "ffn_norm": (c.dim,), "ffn_gate": (c.ffn, c.dim),
                "ffn_up": (c.ffn, c.dim), "ffn_down": (c.dim, c.ffn)}
        for i in range(c.n_layer):
            for w, shape in want.items():
                t = self._t(f"blk.{i}.{w}.weight")
                if tuple(t.shape) != shape:
                    raise ValueError(f"blk.{i}.{w}.weight has shape {t.shape}, expected {shape}")
                if t.data.nbytes != t.rows * R.row_bytes(t.qtype, t.cols):
                    raise ValueError(f"blk.{i}.{w}.weight: {t.data.nbytes} bytes do not fit {t.qtype} {t.shape}")
        for name in ("token_embd.weight", self.output_name):
            if tuple(self._t(name).shape) != (c.vocab, c.dim):
                raise ValueError(f"{name} has shape {self._t(name).shape}, expected {(c.vocab, c.dim)}")

    def _c_config(self) -> tuple:
        c = self.config
        return (c.n_layer, c.dim, c.ffn, c.n_head, c.n_head_kv, c.head_dim, c.vocab, self.n_ctx, self.kv_pad,
                c.eps, c.rope_base)

    def _c_weights(self) -> list:
        def w(name: str) -> tuple:
            t = self._t(name)
            if t.qtype not in _QTYPE_CODES:
                raise ValueError(f"{name}: unsupported qtype {t.qtype}")
            return (t.data, _QTYPE_CODES[t.qtype])

        names = ["token_embd.weight", self.output_name, "output_norm.weight"]
        names += [f"blk.{i}.{w}.weight" for i in range(self.config.n_layer) for w in _LAYER_WEIGHTS]
        return [w(n) for n in names]

    # ---- running ----
    def new_cache(self) -> KVCache:
        if self._device is not None:
            return self._device.new_cache(self.n_ctx)
        c = self.config
        k = np.zeros((c.n_layer, self.n_ctx, c.n_head_kv, c.head_dim), np.float16)
        v = np.zeros((c.n_layer, c.n_head_kv, c.head_dim, self.n_ctx), np.float16)
        return KVCache(k, v)

    def forward(self, tokens: Sequence[int] | np.ndarray, cache: KVCache,
                attention_layers: Iterable[int] = (), all_positions: bool = False) -> ForwardResult:
        """Append `tokens` at positions cache.n.. and return logits/hidden of the last one.

        attention_layers: layers whose attention probabilities of the last position over the whole
        context (n_head, cache.n) are returned, for attribution.
        all_positions: return logits (T, vocab) and hidden states (T, dim) of every appended token
        (scoring a text in one pass, building a kNN-LM datastore).
        """
        toks = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1)).astype(np.int32)
        layers = sorted(set(int(i) for i in attention_layers))
        if toks.size == 0:
            raise ValueError("forward needs at least one token")
        if toks.min() < 0 or toks.max() >= self.config.vocab:
            raise ValueError(f"token ids must be in [0, {self.config.vocab})")
        if cache.n + toks.size > cache.capacity:
            raise ValueError(f"context full: {cache.n} + {toks.size} > {cache.capacity}")
        if any(not 0 <= i < self.config.n_layer for i in layers):
            raise ValueError(f"attention layers must be in [0, {self.config.n_layer})")
        results = []
        for start in range(0, toks.size, self.n_batch):
            chunk = toks[start:start + self.n_batch]
            last = start + self.n_batch >= toks.size
            results.append(self._forward_chunk(chunk, cache, layers if last else [], all_positions))
        if not all_positions:
            return results[-1]
        return ForwardResult(np.concatenate([r.logits.reshape(-1, self.config.vocab) for r in results]),
                             np.concatenate([r.hidden.reshape(-1, self.config.dim) for r in results]),
                             results[-1].attention)

    def _forward_chunk(self, toks: np.ndarray, cache: KVCache, layers: list[int], all_positions: bool) -> ForwardResult:
        c = self.config
        n_end = cache.n + toks.size
        if self._device is not None:
            return ForwardResult(*self._device.forward(toks, cache, layers, all_positions))
        if self._c_model is None:
            return self._forward_reference(toks, cache, layers, all_positions)
        rows = toks.size if all_positions else 1
        logits = np.empty((rows, c.vocab) if all_positions else c.vocab, np.float32)
        hidden = np.empty((rows, c.dim) if all_positions else c.dim, np.float32)
        attn = [np.empty((c.n_head, n_end), np.float32) if i in layers else None for i in range(c.n_layer)]
        self._quant.llama_forward(self._c_model, toks, cache.n, cache.k, cache.v, logits, hidden,
                                  attn if layers else None)
        cache.n = n_end
        return ForwardResult(logits, hidden, {i: attn[i] for i in layers})

    # ---- NumPy reference path (same math, slow) ----
    def _dense(self, name: str, x: np.ndarray) -> np.ndarray:
        t = self._t(name)
        return R.matmul_q8(t.data, t.qtype, t.rows, t.cols, x)

    def _f32(self, name: str) -> np.ndarray:
        return np.frombuffer(self._t(name).data, np.float32)

    def _forward_reference(self, toks: np.ndarray, cache: KVCache, layers: list[int],
                           all_positions: bool = False) -> ForwardResult:
        c, T, p0 = self.config, toks.size, cache.n
        hd = c.head_dim
        emb = self._t("token_embd.weight")
        rb = R.row_bytes(emb.qtype, c.dim)
        h = np.concatenate([R.dequantize(emb.data[i * rb:(i + 1) * rb], emb.qtype, 1, c.dim) for i in toks])  # (T, D)
        pos = np.arange(p0, p0 + T)
        attention = {}
        for i in range(c.n_layer):
            b = f"blk.{i}."
            xn = R.rms_norm(h, self._f32(b + "attn_norm.weight"), c.eps)
            q = R.rope_norm(self._dense(b + "attn_q.weight", xn).reshape(T, c.n_head, hd), pos, c.rope_base)
            k = R.rope_norm(self._dense(b + "attn_k.weight", xn).reshape(T, c.n_head_kv, hd), pos, c.rope_base)
            v = self._dense(b + "attn_v.weight", xn).reshape(T, c.n_head_kv, hd)
            cache.k[i, p0:p0 + T] = k
            cache.v[i, :, :, p0:p0 + T] = v.transpose(1, 2, 0)
            v_rows = cache.v[i].transpose(2, 0, 1)  # (n_ctx, Hkv, hd) view
            att = np.empty((T, c.n_head, hd), np.float32)
            for t in range(T):
                att[t], probs = R.attention_step(q[t], cache.k[i], v_rows, p0 + t + 1)
                if i in layers and t == T - 1:
                    attention[i] = probs
            h = h + self._dense(b + "attn_output.weight", att.reshape(T, c.dim))
            xn = R.rms_norm(h, self._f32(b + "ffn_norm.weight"), c.eps)
            g = R.swiglu(self._dense(b + "ffn_gate.weight", xn), self._dense(b + "ffn_up.weight", xn))
            h = h + self._dense(b + "ffn_down.weight", g)
        cache.n = p0 + T
        out = h if all_positions else h[-1:]
        logits = self._dense(self.output_name, R.rms_norm(out, self._f32("output_norm.weight"), c.eps))
        if all_positions:
            return ForwardResult(logits, out.copy(), attention)
        return ForwardResult(logits[0], out[0].copy(), attention)
