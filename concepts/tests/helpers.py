"""Test data: atoms with feature embeddings written the way ingestion writes them (real rows, real DB)."""
from __future__ import annotations

import hashlib
import uuid

import numpy as np

from atoms.models import Atom, AtomEmbedding

IMAGE_MODEL = "image-hist-dct-256-v1"
DIMS = {"all-MiniLM-L6-v2": 384, "image-hist-dct-256-v1": 256, "audio-logmel-stats-256-v1": 256}


def _padded(vectors, model: str) -> np.ndarray:
    """The indexed models have fixed dimensions: zero-pad low-dimensional test points to them."""
    x = np.asarray(vectors, np.float32)
    dim = DIMS.get(model, x.shape[1])
    return np.hstack([x, np.zeros((len(x), dim - x.shape[1]), np.float32)]) if x.shape[1] < dim else x


def blobs(n_per: int, centers: int, dim: int = 16, seed: int = 0, spread: float = 0.05, scale: float = 3.0):
    """(N, dim) float32 points around `centers` well separated centers, and their true labels."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)) * scale
    labels = np.repeat(np.arange(centers), n_per)
    x = c[labels] + rng.standard_normal((len(labels), dim)) * spread
    return x.astype(np.float32), labels


def make_atoms(vectors, *, modality: str = "image", model: str = IMAGE_MODEL, texts=None, metadata=None,
               times=None, parent: Atom | None = None) -> list[Atom]:
    """One atom (with one embedding under `model`) per row of `vectors`, in the active schema."""
    vectors = _padded(vectors, model)
    atoms = []
    for i, _ in enumerate(vectors):
        body = f"{modality}-{uuid.uuid4().hex}".encode()
        t0, t1 = times[i] if times is not None else (None, None)
        atoms.append(Atom(sha256=hashlib.sha256(body).hexdigest(), modality=modality, mime="application/octet-stream",
                          size=len(body), content=body, text=texts[i] if texts else None,
                          metadata=(metadata[i] if metadata else {"name": f"{modality}-{i}"}),
                          source_kind="derived", time_start=t0, time_end=t1))
    atoms = Atom.objects.bulk_create(atoms)
    AtomEmbedding.objects.bulk_create([
        AtomEmbedding(atom=a, model=model, dim=len(v), vector=np.asarray(v, np.float32)) for a, v in zip(atoms, vectors, strict=True)
    ])
    if parent is not None:
        from atoms.models import AtomRelation

        AtomRelation.objects.bulk_create([AtomRelation(source=a, target=parent, relation="PART_OF") for a in atoms])
    return atoms


def make_parent(name: str = "video.mp4", modality: str = "video") -> Atom:
    body = f"{name}-{uuid.uuid4().hex}".encode()
    return Atom.objects.create(sha256=hashlib.sha256(body).hexdigest(), modality=modality, mime="video/mp4",
                               size=len(body), content=body, metadata={"name": name})
