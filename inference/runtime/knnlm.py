"""kNN-LM (Khandelwal et al., 2020): interpolate the LM's next-token distribution with one read off the
nearest neighbours of the current context in a datastore of (context representation -> next token).

Keys: the representation the output layer reads, i.e. the final hidden state AFTER the output RMSNorm
(weight included), L2-normalised and stored float16. With unit keys, squared L2 distance is 2 - 2*cos,
so the paper's exp(-d) weighting is exp(cos / temperature) up to a constant: neighbours are found by dot
product (`native.topk`, metric "dot") and weighted by softmax(score / temperature).

Values: the id of the token that followed the key's position. Groups: an int per entry (e.g. the
document it came from), entries kept sorted by group so one group is a contiguous slice and can be left
out of a search exactly (`exclude_group`), as a held-out document must be while it is scored.

    ds = datastore_build(llama, [tokenizer.encode(text) for text in texts], groups=doc_ids, window=512)
    out = llama.forward(tokens, llama.new_cache(), all_positions=True)
    lp = interpolate(out.logits, knn_logprobs(ds, out.hidden, k=16, temperature=0.1), lam=0.25)  # (T, V)

No Django here: `save(ds) -> bytes` / `load(bytes)` (npz) let the caller store a datastore as an atom.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import native

__all__ = ["Datastore", "adaptive_lambda", "context_keys", "datastore_build", "interpolate", "knn_interpolate",
           "knn_logprobs", "knn_search", "load", "log_softmax", "neighbours", "save"]

FORMAT = 1


@dataclass(frozen=True)
class Datastore:
    keys: np.ndarray         # (N, D) float16, unit rows: normalised post-output-norm hidden states
    values: np.ndarray       # (N,) int32: the next token after each key's position
    groups: np.ndarray       # (N,) int64, ascending: the group (document) of each entry
    norm_weight: np.ndarray  # (D,) float32: the model's output RMSNorm weight (queries get the same map)
    eps: float               # the RMSNorm epsilon
    vocab: int

    def __post_init__(self) -> None:
        n, d = _shape2(self.keys, "keys")
        if self.keys.dtype != np.float16:
            raise ValueError(f"keys must be float16, got {self.keys.dtype}")
        if self.values.shape != (n,) or self.groups.shape != (n,):
            raise ValueError(f"values and groups must have shape ({n},)")
        if self.norm_weight.shape != (d,):
            raise ValueError(f"norm_weight must have shape ({d},), got {self.norm_weight.shape}")
        if self.vocab < 1 or (n and (self.values.min() < 0 or self.values.max() >= self.vocab)):
            raise ValueError(f"values must be token ids in [0, {self.vocab})")
        if n and (np.diff(self.groups) < 0).any():
            raise ValueError("groups must be sorted ascending")

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def dim(self) -> int:
        return int(self.keys.shape[1])

    def group_slice(self, group: int) -> tuple[int, int]:
        """[start, end) of the entries of `group` (empty when it has none)."""
        return (int(np.searchsorted(self.groups, group, "left")), int(np.searchsorted(self.groups, group, "right")))


def _shape2(x: np.ndarray, name: str) -> tuple[int, int]:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    return int(x.shape[0]), int(x.shape[1])


def context_keys(hidden: np.ndarray, norm_weight: np.ndarray, eps: float) -> np.ndarray:
    """Pre-output-norm hidden states (T, D) or (D,) -> unit keys (T, D) float32 (RMSNorm, then L2)."""
    h = np.asarray(hidden, dtype=np.float32)
    h = h.reshape(1, -1) if h.ndim == 1 else h
    if h.ndim != 2 or h.shape[1] != norm_weight.shape[0]:
        raise ValueError(f"hidden must be (T, {norm_weight.shape[0]}) or ({norm_weight.shape[0]},), got {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("hidden must be finite")
    x = h / np.sqrt(np.mean(h * h, axis=1, keepdims=True) + eps) * norm_weight
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _output_norm(llama) -> tuple[np.ndarray, float]:
    return np.frombuffer(llama.tensors["output_norm.weight"].data, np.float32).copy(), float(llama.config.eps)


def datastore_build(llama, token_lists: Sequence[Sequence[int]], *, groups: Sequence[int] | None = None,
                    window: int | None = None, stride: int | None = None,
                    progress: Callable[[int], None] | None = None) -> Datastore:
    """One entry per position that has a next token, from batched all-position forwards.

    A text longer than `window` (default: the model's n_ctx) is read in windows of `window` tokens that
    start every `stride` tokens (default: `window`, no overlap); each position's entry comes from the
    first window that has the most context for it. `groups` (default: the text's index) tags entries.
    """
    window = llama.n_ctx if window is None else int(window)
    stride = window if stride is None else int(stride)
    if not 2 <= window <= llama.n_ctx:
        raise ValueError(f"window must be in [2, {llama.n_ctx}], got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    groups = list(range(len(token_lists))) if groups is None else [int(g) for g in groups]
    if len(groups) != len(token_lists):
        raise ValueError(f"{len(groups)} groups for {len(token_lists)} token lists")
    weight, eps = _output_norm(llama)
    keys, values, tags = [], [], []
    cache = llama.new_cache()
    for tokens, group in zip(token_lists, groups, strict=True):
        hidden, nxt = _text_entries(llama, cache, np.asarray(tokens, dtype=np.int64).reshape(-1), window, stride)
        keys.append(context_keys(hidden, weight, eps).astype(np.float16))
        values.append(nxt)
        tags.append(np.full(len(nxt), group, np.int64))
        if progress is not None:
            progress(len(tokens))
    return _sorted_store(keys, values, tags, weight, eps, llama.config.vocab)


def _text_entries(llama, cache, tokens: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(hidden (M, D) float32, next token (M,) int32) for the M = len(tokens) - 1 positions of one text."""
    hidden, nxt, n, b = [], [], tokens.size, 0
    while n >= 2:
        seg = tokens[b:b + window]
        first, last = (0 if b == 0 else window - stride), min(seg.size, n - 1 - b)
        cache.reset()
        h = llama.forward(seg, cache, all_positions=True).hidden  # (len(seg), D)
        hidden.append(h[first:last])
        nxt.append(tokens[b + first + 1:b + last + 1])
        if b + window >= n:
            break
        b += stride
    if not hidden:
        return np.zeros((0, llama.config.dim), np.float32), np.zeros(0, np.int32)
    return np.concatenate(hidden), np.concatenate(nxt).astype(np.int32)


def _sorted_store(keys, values, tags, weight, eps, vocab) -> Datastore:
    dim = weight.shape[0]
    k = np.concatenate(keys) if keys else np.zeros((0, dim), np.float16)
    v = np.concatenate(values) if values else np.zeros(0, np.int32)
    g = np.concatenate(tags) if tags else np.zeros(0, np.int64)
    order = np.argsort(g, kind="stable")
    return Datastore(np.ascontiguousarray(k[order]), v[order], g[order], weight, eps, vocab)


def neighbours(ds: Datastore, query_keys: np.ndarray, k: int, exclude_group: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product over unit keys, best first, leaving out `exclude_group`'s entries.

    query_keys (Q, D) float32 -> indices (Q, k') int64 into the datastore, scores (Q, k') float32,
    k' = min(k, number of searchable entries)."""
    lo, hi = ds.group_slice(exclude_group) if exclude_group is not None else (0, 0)
    parts = [(0, lo), (hi, len(ds))] if hi > lo else [(0, len(ds))]
    idx, sc = [], []
    for a, b in parts:
        if b > a:
            i, s = native.topk(query_keys, ds.keys[a:b], min(k, b - a), metric="dot")
            idx.append(i.reshape(len(query_keys), -1) + a)
            sc.append(s.reshape(len(query_keys), -1))
    if not idx:
        return np.zeros((len(query_keys), 0), np.int64), np.zeros((len(query_keys), 0), np.float32)
    idx, sc = np.concatenate(idx, axis=1), np.concatenate(sc, axis=1)
    best = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, best, 1), np.take_along_axis(sc, best, 1)


def knn_logprobs(ds: Datastore, query_hidden: np.ndarray, *, k: int, temperature: float,
                 exclude_group: int | None = None) -> np.ndarray:
    """p_kNN(w) = sum of softmax(score / temperature) over the k neighbours whose value is w, as logs.

    query_hidden: pre-output-norm hidden (D,) or (T, D) (as Llama.forward returns it) -> (vocab,) or
    (T, vocab) float32 log-probabilities; tokens no neighbour votes for get -inf (all -inf when the
    datastore has nothing to search)."""
    return knn_search(ds, query_hidden, k=k, temperature=temperature, exclude_group=exclude_group)[0]


def knn_search(ds: Datastore, query_hidden: np.ndarray, *, k: int, temperature: float,
               exclude_group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(knn_logprobs(...), the nearest neighbour's cosine similarity per query: (,) or (T,), -1 when none)."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    single = np.asarray(query_hidden).ndim == 1
    q = context_keys(query_hidden, ds.norm_weight, ds.eps)  # (T, D)
    idx, sc = neighbours(ds, q, int(k), exclude_group)
    out = np.full((len(q), ds.vocab), -np.inf, np.float32)
    top = sc[:, 0].astype(np.float32) if idx.shape[1] else np.full(len(q), -1.0, np.float32)
    if idx.shape[1]:
        w = np.exp(log_softmax(sc.astype(np.float64) / temperature))  # (T, k'), rows sum to 1
        flat, inv = np.unique((np.arange(len(q))[:, None] * ds.vocab + ds.values[idx]).ravel(), return_inverse=True)
        mass = np.zeros(flat.size)
        np.add.at(mass, inv.ravel(), w.ravel())
        with np.errstate(divide="ignore"):
            out.reshape(-1)[flat] = np.log(mass)
    return (out[0], top[0]) if single else (out, top)


def adaptive_lambda(top_similarity: np.ndarray, lam: float, theta: float, width: float) -> np.ndarray:
    """λ_t = lam * sigmoid((s_t - theta) / width), s_t the nearest neighbour's cosine: trust the datastore
    when the current context has a close match in it, fall back to the LM when it has none."""
    if not 0.0 <= lam < 1.0 or not width > 0:
        raise ValueError(f"need 0 <= lam < 1 and width > 0, got lam={lam!r}, width={width!r}")
    s = np.asarray(top_similarity, dtype=np.float64)
    return (lam / (1.0 + np.exp(-(s - theta) / width))).astype(np.float32)


def knn_interpolate(ds: Datastore, logits: np.ndarray, hidden: np.ndarray, *, lam: float, k: int,
                    temperature: float, adaptive: Sequence[float] | None = None,
                    exclude_group: int | None = None) -> np.ndarray:
    """interpolate(logits, p_kNN, λ) with λ fixed, or adaptive_lambda(s, λ, *adaptive) when `adaptive`
    = (θ, w) is given: the whole kNN-LM step of generation (and of the perplexity bench)."""
    knn, top = knn_search(ds, hidden, k=k, temperature=temperature, exclude_group=exclude_group)
    weight = lam if adaptive is None else adaptive_lambda(top, lam, *adaptive)
    if np.ndim(weight) == 0:
        weight = float(weight)
    return interpolate(logits, knn, weight)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis; idempotent on log-probabilities; rows of all -inf stay -inf."""
    x = np.asarray(x)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def interpolate(lm: np.ndarray, knn: np.ndarray, lam) -> np.ndarray:
    """log((1 - lam) * p_LM + lam * p_kNN): `lm` logits or log-probs, `knn` log-probs, same shape; `lam` a
    number or one per row (e.g. `adaptive_lambda`)."""
    lam_a = np.asarray(lam, dtype=np.float64)
    if lam_a.ndim > 1 or not np.isfinite(lam_a).all() or (lam_a < 0).any() or (lam_a > 1).any():
        raise ValueError(f"lam must be in [0, 1], got {lam!r}")
    lm, knn = np.asarray(lm, dtype=np.float32), np.asarray(knn, dtype=np.float32)
    if lm.shape != knn.shape:
        raise ValueError(f"lm {lm.shape} and knn {knn.shape} must have the same shape")
    lm_lp = log_softmax(lm)
    if lam_a.ndim == 1:
        if lm.ndim != 2 or lam_a.shape[0] != lm.shape[0]:
            raise ValueError(f"one lam per row: {lam_a.shape} for {lm.shape}")
        lam_a = lam_a[:, None]
    elif lam_a == 0.0:
        return lm_lp
    elif lam_a == 1.0:
        return knn.copy()
    with np.errstate(divide="ignore"):
        return np.logaddexp(np.log1p(-lam_a) + lm_lp, np.log(lam_a) + knn).astype(np.float32)


def save(ds: Datastore) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, format=np.int64(FORMAT), keys=ds.keys, values=ds.values, groups=ds.groups,
             norm_weight=ds.norm_weight, eps=np.float64(ds.eps), vocab=np.int64(ds.vocab))
    return buf.getvalue()


def load(data: bytes) -> Datastore:
    try:
        z = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
        fields = {name: z[name] for name in ("format", "keys", "values", "groups", "norm_weight", "eps", "vocab")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ValueError(f"not a kNN-LM datastore: {exc}") from None
    if int(fields["format"]) != FORMAT:
        raise ValueError(f"unsupported datastore format {int(fields['format'])}")
    return Datastore(fields["keys"], fields["values"].astype(np.int32), fields["groups"].astype(np.int64),
                     fields["norm_weight"].astype(np.float32), float(fields["eps"]), int(fields["vocab"]))
