"""Embedding providers: an interface, a registry, and how vectors are projected to 2D/3D.

The atom store does not know which model embeds text: a higher layer (inference) registers a
provider at start-up. Image and audio atoms carry deterministic feature vectors from extraction.
"""
from __future__ import annotations

import functools
import threading
from typing import Protocol

import numpy as np

TEXT_MODALITIES = ("text", "code", "document")


class EmbeddingProvider(Protocol):
    name: str  # stored as AtomEmbedding.model
    dim: int

    def embed_texts(self, texts: list[str]) -> np.ndarray:  # (N, dim) float32, L2-normalised
        ...


_factory = None  # called lazily, once per process
_name: str | None = None
_provider: EmbeddingProvider | None = None
_lock = threading.Lock()


def register_text_provider(factory, *, name: str) -> None:
    """Register a factory (called lazily, once per process) for the text embedding provider."""
    global _factory, _name, _provider
    with _lock:
        _factory, _name, _provider = factory, name, None


def text_provider() -> EmbeddingProvider:
    global _provider
    with _lock:
        if _provider is None:
            if _factory is None:
                raise LookupError("no text embedding provider is registered")
            _provider = _factory()
        return _provider


def text_provider_name() -> str | None:
    return _name


@functools.cache
def _projection(dim: int) -> np.ndarray:
    # a fixed Gaussian random projection (Johnson-Lindenstrauss), the same on every machine
    rng = np.random.default_rng(20260101 + dim)
    return (rng.standard_normal((dim, 3)) / np.sqrt(3)).astype(np.float32)


def project(vectors: np.ndarray) -> np.ndarray:
    """(N, D) → (N, 3): the first two columns are the 2D point, all three the 3D projection."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors @ _projection(vectors.shape[1])
