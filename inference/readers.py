"""Model file readers: GGUF (header parsed with small streamed reads; the `gguf` package only for its
type tables) and safetensors, with the architecture and shape checks ingestion relies on."""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hartonomous.errors import Forbidden, NotFound, Unprocessable

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURES = {"gguf": {"llama"}, "safetensors": {"bert"}}
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1}
MAX_HEADER_BYTES = 256 * 1024 * 1024


# --------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------
@dataclass
class TensorInfo:
    name: str
    qtype: str
    shape: tuple[int, ...]  # numpy order (rows..., cols)
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelFile:
    format: str
    path: Path
    architecture: str
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    tokenizer_json: str | None = None


class _Header:
    """Bounded little-endian reads from a file; running past its end is a truncated file."""

    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size = f, size

    def read(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise Unprocessable("The model file is truncated or corrupt (header runs past the end).")
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        try:
            return self.read(self.unpack("Q")).decode("utf-8")
        except UnicodeDecodeError:
            raise Unprocessable("The model file is corrupt (a string is not UTF-8).") from None


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_value(h: _Header, vtype: int):
    if vtype in _GGUF_SCALARS:
        return h.unpack(_GGUF_SCALARS[vtype])
    if vtype == 8:
        return h.string()
    if vtype == 9:
        itype, count = h.unpack("I"), h.unpack("Q")
        if count > h.size:
            raise Unprocessable("The model file is corrupt (impossible array length).")
        if itype in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[itype]
            raw = h.read(count * struct.calcsize(fmt))
            return np.frombuffer(raw, dtype=np.dtype("<" + fmt)).tolist()
        return [_gguf_value(h, itype) for _ in range(count)]
    raise Unprocessable(f"The model file is corrupt (unknown metadata value type {vtype}).")


def read_gguf(path: Path) -> ModelFile:
    """Parse a GGUF header (metadata + tensor infos) with streamed reads; tensor bytes are not read."""
    import gguf

    size = path.stat().st_size
    with open(path, "rb") as f:
        h = _Header(f, size)
        if h.read(4) != GGUF_MAGIC:
            raise Unprocessable("Not a GGUF file (bad magic).")
        version = h.unpack("I")
        if version not in (2, 3):
            raise Unprocessable(f"Unsupported GGUF version {version}.")
        n_tensors, n_kv = h.unpack("Q"), h.unpack("Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise Unprocessable("The model file is corrupt (impossible counts).")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = h.string()
            meta[key] = _gguf_value(h, h.unpack("I"))
        infos = []
        for _ in range(n_tensors):
            name = h.string()
            n_dims = h.unpack("I")
            if n_dims > 8:
                raise Unprocessable(f"{name}: impossible number of dimensions {n_dims}.")
            dims = [h.unpack("Q") for _ in range(n_dims)]
            code, rel = h.unpack("I"), h.unpack("Q")
            infos.append((name, dims, code, rel))
        alignment = int(meta.get("general.alignment", 32) or 32)
        data_start = -(-f.tell() // alignment) * alignment
    tensors = []
    for name, dims, code, rel in infos:
        try:
            qtype = gguf.GGMLQuantizationType(code)
        except ValueError:
            raise Unprocessable(f"Tensor {name!r} has an unknown quantization type {code}.",
                                details={"tensor": name, "qtype": code}) from None
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        n = math.prod(dims)
        if not dims or dims[0] % block or any(d <= 0 for d in dims):
            raise Unprocessable(f"Tensor {name!r} has a shape {dims} that does not fit {qtype.name} blocks.",
                                details={"tensor": name})
        nbytes = n // block * type_size
        offset = data_start + rel
        if offset + nbytes > size:
            raise Unprocessable("The model file is truncated: a tensor runs past its end.",
                                details={"tensor": name, "file_size": size, "needed": offset + nbytes})
        tensors.append(TensorInfo(name, qtype.name, tuple(int(d) for d in reversed(dims)), offset, nbytes))
    arch = str(meta.get("general.architecture", ""))
    hyper = {k[len(arch) + 1:]: v for k, v in meta.items() if k.startswith(arch + ".") and not isinstance(v, list)}
    model = ModelFile("gguf", path, arch, meta, tensors, hyper)
    _check_architecture(model)
    if "tokenizer.ggml.model" in meta:
        model.tokenizer_json = _gguf_tokenizer_json(meta)
    return model


def _gguf_tokenizer_json(meta: dict) -> str:
    from .runtime.tokenizer import GGUFTokenizer

    try:
        tok = GGUFTokenizer(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(f"The model's tokenizer cannot be rebuilt: {exc}") from None
    return tok.to_json()


def read_safetensors(path: Path) -> ModelFile:
    """Parse a safetensors header; architecture, hyper-parameters and tokenizer come from the files beside it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = _Header(f, size)
        n = h.unpack("Q")
        if n > min(size, MAX_HEADER_BYTES):
            raise Unprocessable("Not a safetensors file (impossible header length).")
        try:
            header = json.loads(h.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Unprocessable("Not a safetensors file (the header is not JSON).") from None
    if not isinstance(header, dict):
        raise Unprocessable("Not a safetensors file (the header is not an object).")
    meta = header.pop("__metadata__", None) or {}
    data_start, tensors = 8 + n, []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise Unprocessable(f"Tensor {name!r} has a malformed header entry.") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise Unprocessable(f"Tensor {name!r} has an unknown dtype {dtype!r}.", details={"tensor": name})
        want = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
        if end - begin != want or begin < 0 or any(s < 0 for s in shape):
            raise Unprocessable(f"Tensor {name!r}: {end - begin} bytes do not fit {dtype} {shape}.",
                                details={"tensor": name})
        if data_start + end > size:
            raise Unprocessable("The model file is truncated: a tensor runs past its end.", details={"tensor": name})
        tensors.append(TensorInfo(name, dtype, tuple(shape), data_start + begin, want))
    tensors.sort(key=lambda t: t.offset)
    folder = path.parent
    config = _json_file(folder / "config.json")
    arch = str(config.get("model_type", "")) if config else ""
    hyper = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
    st = _json_file(folder / "sentence_bert_config.json")
    if "max_seq_length" in st:
        hyper["max_seq_length"] = st["max_seq_length"]
    model = ModelFile("safetensors", path, arch, {"safetensors": meta, "config": config, "sentence_bert": st},
                      tensors, hyper)
    _check_architecture(model)
    tok = folder / "tokenizer.json"
    if tok.is_file():
        model.tokenizer_json = tok.read_text(encoding="utf-8")
    return model


def _json_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Unprocessable(f"{path.name} beside the model is not valid JSON.") from None
    return data if isinstance(data, dict) else {}


def _check_architecture(model: ModelFile) -> None:
    if model.architecture not in SUPPORTED_ARCHITECTURES[model.format]:
        raise Unprocessable(f"Unknown model architecture {model.architecture!r} for {model.format}.",
                            details={"architecture": model.architecture,
                                     "supported": sorted(SUPPORTED_ARCHITECTURES[model.format])})
    if model.architecture == "llama":
        _check_llama_shapes(model)


def _check_llama_shapes(model: ModelFile) -> None:
    hp, by_name = model.hyperparameters, {t.name: t for t in model.tensors}
    try:
        dim, ffn, n_layer = int(hp["embedding_length"]), int(hp["feed_forward_length"]), int(hp["block_count"])
        n_head = int(hp["attention.head_count"])
        kv = int(hp.get("attention.head_count_kv", n_head)) * (dim // n_head)
    except (KeyError, ValueError, TypeError, ZeroDivisionError):
        raise Unprocessable("The llama model lacks its hyper-parameters.") from None
    if "token_embd.weight" not in by_name:
        raise Unprocessable("The llama model has no token_embd.weight.")
    vocab = by_name["token_embd.weight"].shape[0]
    want = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,), "output.weight": (vocab, dim)}
    per_layer = {"attn_norm": (dim,), "attn_q": (dim, dim), "attn_k": (kv, dim), "attn_v": (kv, dim),
                 "attn_output": (dim, dim), "ffn_norm": (dim,), "ffn_gate": (ffn, dim), "ffn_up": (ffn, dim),
                 "ffn_down": (dim, ffn)}
    want.update({f"blk.{i}.{w}.weight": s for i in range(n_layer) for w, s in per_layer.items()})
    for name, shape in want.items():
        t = by_name.get(name)
        if t is None:
            if name == "output.weight":
                continue  # tied embeddings
            raise Unprocessable(f"The llama model has no tensor {name!r}.", details={"tensor": name})
        if t.shape != shape:
            raise Unprocessable(f"Tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}.",
                                details={"tensor": name, "shape": list(t.shape), "expected": list(shape)})


def read_model_file(path: Path) -> ModelFile:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == GGUF_MAGIC:
        return read_gguf(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    raise Unprocessable("Unknown model format (expected GGUF or safetensors).", details={"path": str(path)})


def check_import_path(path: str | Path, roots: list[str]) -> None:
    """Refuse (403) a path outside the allowed model folders, symlinks and `..` resolved first: an API
    caller must not make the server read arbitrary files."""
    real = Path(os.path.realpath(path))
    for root in roots:
        base = Path(os.path.realpath(root))
        if real == base or base in real.parents:
            return
    raise Forbidden("The path is outside the folders models may be imported from.",
                    details={"path": str(path), "allowed": [str(r) for r in roots]})


def resolve_model_path(path: str | Path) -> Path:
    """A model file, or the single .gguf / model.safetensors under a folder."""
    p = Path(path)
    if not p.exists():
        raise NotFound("No such model file.", details={"path": str(path)})
    if p.is_dir():
        hits = sorted(p.rglob("*.gguf")) or sorted(p.rglob("*.safetensors"))
        if len(hits) != 1:
            raise Unprocessable(f"Expected one model file under the folder, found {len(hits)}.",
                                details={"path": str(path)})
        p = hits[0]
    if not p.is_file():
        raise Unprocessable("Not a regular file.", details={"path": str(path)})
    return p
