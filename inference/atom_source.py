"""Load a model back from its atoms: a tensor source over memory-mapped blobs, then the runtime on top.

Never touches the original file. Each chunk's SHA-256 is verified once per process (the blob is hashed
when first mapped); single-chunk tensors are zero-copy views of the mapped blob, multi-chunk tensors are
their blob files mapped back to back into one range (inference.contiguous; joined in RAM only on a store
without local files). Loaded runtimes are cached per process by the model's manifest digest.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from atoms.blobstore import FileSystemBlobStore
from atoms.models import Atom
from atoms.storage import blobstore
from hartonomous.errors import Unprocessable

from .contiguous import map_files
from .models import Model

__all__ = ["LoadedModel", "load_runtime", "model_manifest", "model_tensor_source", "read_atom_bytes"]

_verified: set[str] = set()
_cache: dict[str, LoadedModel] = {}
_cache_lock = threading.Lock()
SAFETENSORS_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                     "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _map_blob(sha: str) -> Any:
    """The blob's bytes: a read-only mmap for the filesystem store, else bytes; digest checked once."""
    store = blobstore()
    if isinstance(store, FileSystemBlobStore):
        with open(store.path(sha), "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if f.seek(0, 2) else b""
    else:
        buf = store.read_bytes(sha)
    if sha not in _verified:
        if hashlib.sha256(buf).hexdigest() != sha:
            raise Unprocessable("A tensor atom's bytes do not match its digest (the blob store is corrupt).",
                                details={"sha256": sha})
        _verified.add(sha)
    return buf


def read_atom_bytes(atom: Atom) -> bytes:
    if not atom.in_blob:
        return bytes(atom.content or b"")
    return bytes(_map_blob(atom.sha256))


def model_manifest(model: Model) -> dict:
    return json.loads(read_atom_bytes(model.root))


def _tensor_bytes(digests: list[str]) -> Any:
    """One buffer over a tensor's chunk blobs: a view, never a copy, on the filesystem store."""
    if len(digests) == 1:
        return _map_blob(digests[0])
    store = blobstore()
    if isinstance(store, FileSystemBlobStore):
        for sha in digests:
            if sha not in _verified:
                _map_blob(sha)  # hashes it once per process
        mapped = map_files([store.path(sha) for sha in digests])
        if mapped is not None:
            return mapped
    return b"".join(_map_blob(sha) for sha in digests)


def model_tensor_source(model: Model) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """name -> (qtype, shape, bytes-like) for every tensor of `model`, read from its tensor atoms."""
    tensors = list(model.tensors.order_by("index"))
    ids = {i for t in tensors for i in t.chunks}
    sha = dict(Atom.objects.filter(pk__in=ids).values_list("id", "sha256"))
    out = {}
    for t in tensors:
        buf = _tensor_bytes([sha[i] for i in t.chunks])
        if len(buf) != t.nbytes:
            raise Unprocessable(f"Tensor {t.name!r}: atoms hold {len(buf)} bytes, expected {t.nbytes}.")
        out[t.name] = (t.qtype, tuple(int(s) for s in t.shape), buf)
    return out


@dataclass
class LoadedModel:
    """A runtime built from atoms: `llama` + `tokenizer` (decoders) or `encoder` (MiniLM)."""

    model_id: int
    architecture: str
    metadata: dict
    llama: Any = None
    tokenizer: Any = None
    encoder: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _build(model: Model, n_ctx: int) -> LoadedModel:
    from .runtime import DictTensorSource, GGUFTokenizer, Llama, LlamaConfig

    manifest = model_manifest(model)
    meta = manifest["metadata"]
    items = model_tensor_source(model)
    loaded = LoadedModel(model.pk, model.architecture, meta)
    try:
        if model.architecture == "llama":
            source = DictTensorSource(items)
            config = LlamaConfig.from_metadata(meta, source["token_embd.weight"].shape[0])
            loaded.llama = Llama(source, config, n_ctx=min(n_ctx, config.context_length), backend=settings.LLM_BACKEND)
            loaded.tokenizer = GGUFTokenizer(meta)
        elif model.architecture == "bert":
            loaded.encoder = _bert_encoder(model, meta, items)
        else:
            raise Unprocessable(f"No runtime for architecture {model.architecture!r}.")
    except (ValueError, KeyError) as exc:
        raise Unprocessable(f"The model cannot be run: {exc}") from None
    return loaded


def _bert_encoder(model: Model, meta: dict, items: dict):
    from tokenizers import Tokenizer

    from .runtime.bert import BertConfig, MiniLMEncoder

    weights = {name: np.frombuffer(buf, dtype=SAFETENSORS_NUMPY[q]).reshape(shape)
               for name, (q, shape, buf) in items.items() if q in SAFETENSORS_NUMPY}
    cfg, st = meta.get("config") or {}, meta.get("sentence_bert") or {}
    config = BertConfig(
        hidden_size=cfg.get("hidden_size", 384), num_layers=cfg.get("num_hidden_layers", 6),
        num_heads=cfg.get("num_attention_heads", 12), intermediate_size=cfg.get("intermediate_size", 1536),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        max_seq_length=min(st.get("max_seq_length", 512), cfg.get("max_position_embeddings", 512)))
    if model.tokenizer is None:
        raise Unprocessable("The encoder has no tokenizer atom.")
    tokenizer = Tokenizer.from_str(read_atom_bytes(model.tokenizer).decode())
    return MiniLMEncoder(weights, tokenizer, config)


def load_runtime(model: Model, *, n_ctx: int = 2048) -> LoadedModel:
    """The runtime for `model`, built from its atoms once per process."""
    key = f"{model.root.sha256}:{n_ctx}"
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = _cache[key] = _build(model, n_ctx)
    return loaded


def forget_runtimes() -> None:
    with _cache_lock:
        _cache.clear()
    _verified.clear()
