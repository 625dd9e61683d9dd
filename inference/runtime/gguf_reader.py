"""GGUF files as a tensor source: metadata plus raw tensor bytes, memory-mapped, never dequantized.

The runtime only needs a *tensor source*: a mapping name -> `Tensor(qtype, shape, data)` where `data`
is a flat uint8 buffer of GGUF block bytes. `GGUFFile.tensors` is one; a content-addressed blob store can
provide another (`DictTensorSource`) without the runtime knowing where bytes came from.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DictTensorSource", "GGUFFile", "Tensor", "TensorSource"]


@dataclass(frozen=True)
class Tensor:
    """One weight tensor: qtype name ('Q4_1', 'F32', ...), numpy-order shape (rows, cols) and raw bytes."""

    qtype: str
    shape: tuple[int, ...]
    data: np.ndarray  # (nbytes,) uint8, GGUF block bytes, row-major

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def cols(self) -> int:
        return int(self.shape[-1])


TensorSource = Mapping[str, Tensor]


class DictTensorSource(dict):
    """A tensor source built from (qtype, shape, bytes-like) triples, e.g. blobs read from a store."""

    def __init__(self, items: Mapping[str, tuple[str, tuple[int, ...], Any]]):
        super().__init__(
            (name, Tensor(qtype, tuple(int(s) for s in shape), np.frombuffer(buf, dtype=np.uint8)))
            for name, (qtype, shape, buf) in items.items()
        )


class GGUFFile:
    """A memory-mapped GGUF file: `metadata` (key -> python value) and `tensors` (a tensor source)."""

    def __init__(self, path: str | Path):
        import gguf  # imported here so the runtime can run from other tensor sources without it

        self.path = Path(path)
        self._reader = gguf.GGUFReader(str(self.path), "r")
        self.metadata: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("GGUF."):
                continue
            self.metadata[key] = field.contents()
        self.tensors: dict[str, Tensor] = {}
        for t in self._reader.tensors:
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))  # GGUF lists ne0 (cols) first
            data = np.asarray(t.data).reshape(-1).view(np.uint8)
            if data.nbytes != int(t.n_bytes):
                raise ValueError(f"{t.name}: {data.nbytes} bytes mapped, header says {t.n_bytes}")
            self.tensors[t.name] = Tensor(t.tensor_type.name, shape, data)

    @property
    def architecture(self) -> str:
        return str(self.metadata["general.architecture"])

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)
