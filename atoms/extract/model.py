"""Model files (GGUF, safetensors): recognised and described, never chunked.

The model-ingestion code (inference/) turns them into tensor atoms; here we only read the
header so the root part says what the file is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

from atoms.extract.base import MODEL, ExtractionError, Extractor, Part, Source, root_part

MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def gguf_header(source: Source) -> dict:
    head = source.head(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ExtractionError("model.corrupt", f"{source.name}: truncated GGUF header")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    return {"format": "gguf", "gguf_version": version, "tensor_count": n_tensors, "kv_count": n_kv}


def safetensors_header(source: Source) -> dict:
    with source.open() as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ExtractionError("model.corrupt", f"{source.name}: truncated safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_SAFETENSORS_HEADER:
            raise ExtractionError("model.corrupt", f"{source.name}: header length {n} is implausible")
        body = f.read(n)
    try:
        header = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ExtractionError("model.corrupt", f"{source.name}: unreadable safetensors header") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    dtypes = sorted({v.get("dtype", "?") for v in tensors.values() if isinstance(v, dict)})
    return {"format": "safetensors", "tensor_count": len(tensors), "dtypes": dtypes,
            "header_metadata": header.get("__metadata__") or {}}


class ModelExtractor(Extractor):
    name = "model"
    modalities = (MODEL,)

    def run(self, source: Source) -> Iterator[Part]:
        meta = gguf_header(source) if source.mime == "application/x-gguf" else safetensors_header(source)
        yield root_part(source, chunked=False, **meta)


class BinaryExtractor(Extractor):
    """Anything else: the root part only."""

    name = "binary"
    modalities = ("binary",)

    def able_to_run(self, source: Source) -> bool:
        return True

    def run(self, source: Source) -> Iterator[Part]:
        yield root_part(source)
