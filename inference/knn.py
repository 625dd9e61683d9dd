"""kNN-LM datastores of a tenant: built from its text atoms with a decoder model, stored as an atom
(content-addressed npz, `metadata.kind = "knn-datastore"`), loaded once per process for generation.

Generation with `knn_lambda > 0` samples from log((1 - λ_t) p_LM + λ_t p_kNN) (inference/runtime/knnlm.py),
the kNN distribution read off the K nearest datastore entries of the current context, with the adaptive
weight λ_t = knn_lambda * sigmoid((s_t - θ) / w), s_t the nearest entry's cosine similarity: the
datastore is trusted where the current context has a close match in it and ignored where it has none.
The defaults below (k, temperature, θ, w) and the recommended λ were tuned on dev sections of the awscli
documentation bench (bench/generation/tune_perplexity.py; docs/benchmarks_generation.md). The build is
recorded in the provenance graph: the datastore atom `wasDerivedFrom` the text atoms it was made of.
"""
from __future__ import annotations

import io
import threading
from collections.abc import Callable

import numpy as np

from atoms.embedding import TEXT_MODALITIES
from atoms.models import Atom
from atoms.services import blobs_discard_unreferenced
from atoms.storage import blobstore
from hartonomous.errors import Unprocessable, ValidationFailed

from .models import Model

__all__ = ["KNN_ADAPTIVE", "KNN_K", "KNN_LAMBDA", "KNN_LEGACY", "KNN_TEMPERATURE", "knn_adjuster", "knn_datastore_build",
           "knn_datastore_latest", "knn_settings"]

KIND = "knn-datastore"
KNN_K = 8
KNN_TEMPERATURE = 0.01
KNN_ADAPTIVE = (0.97, 0.02)   # (θ, w) of the adaptive λ; None: a fixed λ
KNN_LAMBDA = 0.9              # the recommended knn_lambda (requests choose their own; 0 = no kNN-LM)
KNN_LEGACY = {"k": 16, "temperature": 0.1, "adaptive": None}   # what runs recorded without knn_settings used
WINDOW = 512
_cache: dict[str, object] = {}
_lock = threading.Lock()


def _texts(max_atoms: int, metadata: dict | None) -> list[tuple[int, str]]:
    qs = Atom.objects.filter(modality__in=TEXT_MODALITIES, deleted_at__isnull=True, text__isnull=False).exclude(text="")
    if metadata:
        qs = qs.filter(metadata__contains=metadata)
    return list(qs.order_by("id").values_list("id", "text")[:max_atoms])


def _store(data: bytes, meta: dict) -> Atom:
    ref = blobstore().put_stream(io.BytesIO(data))
    try:
        atom, created = Atom.objects.get_or_create(
            sha256=ref.sha256, defaults={"modality": "binary", "mime": "application/x-npz", "size": ref.size,
                                         "in_blob": True, "source_kind": "derived", "metadata": meta})
        if not created and atom.deleted_at is not None:
            atom.deleted_at = None
            atom.save(update_fields=["deleted_at"])
    except BaseException:
        if ref.created:
            blobs_discard_unreferenced([ref.sha256])
        raise
    return atom


def knn_datastore_build(*, tenant, model: Model, max_atoms: int = 5000, max_tokens: int = 200_000,
                        metadata: dict | None = None, progress: Callable[[int], None] | None = None) -> Atom:
    """Build (or find, when the same texts give the same bytes) the datastore of `model` over the
    tenant's text atoms (those whose metadata contains `metadata`, when given), oldest first, up to
    `max_atoms` atoms / `max_tokens` tokens."""
    from provenance.services import activity_record

    from .atom_source import load_runtime
    from .runtime import knnlm

    if model.architecture != "llama":
        raise ValidationFailed("A kNN-LM datastore needs a decoder model.", details={"model": model.pk})
    loaded = load_runtime(model, n_ctx=WINDOW)
    ids, token_lists, total = [], [], 0
    for atom_id, text in _texts(max_atoms, metadata):
        toks = loaded.tokenizer.encode(text, add_bos=False, special=False)
        if len(toks) < 2 or total >= max_tokens:
            continue
        toks = toks[:max_tokens - total]
        ids.append(atom_id)
        token_lists.append(toks)
        total += len(toks)
    if not token_lists:
        raise Unprocessable("The tenant has no text atoms to build a kNN-LM datastore from.")
    with loaded.lock:
        ds = knnlm.datastore_build(loaded.llama, token_lists, groups=ids, window=WINDOW, progress=progress)
    meta = {"kind": KIND, "model": model.pk, "model_digest": model.root.sha256, "atoms": len(ids),
            "entries": len(ds), "tokens": total}
    atom = _store(knnlm.save(ds), meta)
    spec = ("atom", str(atom.pk), atom.sha256[:12])
    activity_record(tenant=tenant, kind="embed", agent=("model", str(model.pk), model.name),
                    used=[("atom", str(i)) for i in ids], generated=[spec],
                    derived=[(spec, ("atom", str(i))) for i in ids],
                    attributes={"knn_datastore": atom.pk, "entries": len(ds)})
    return atom


def knn_datastore_latest(*, model: Model) -> Atom | None:
    return (Atom.objects.filter(metadata__kind=KIND, metadata__model_digest=model.root.sha256, deleted_at__isnull=True)
            .order_by("-created_at", "-id").first())


def _load(atom: Atom):
    from .atom_source import read_atom_bytes
    from .runtime import knnlm

    with _lock:
        ds = _cache.get(atom.sha256)
        if ds is None:
            ds = _cache[atom.sha256] = knnlm.load(read_atom_bytes(atom))
    return ds


def knn_settings(settings: dict | None = None) -> dict:
    """The kNN-LM settings a run uses (and records, so a replay uses the same): the defaults, overridden."""
    out = {"k": KNN_K, "temperature": KNN_TEMPERATURE, "adaptive": list(KNN_ADAPTIVE) if KNN_ADAPTIVE else None}
    out.update(settings or {})
    return out


def knn_adjuster(*, tenant, model: Model, lam: float, datastore: int | None = None, settings: dict | None = None
                 ) -> tuple[Callable[[object], np.ndarray], Atom]:
    """(forward result -> interpolated log-probabilities, the datastore atom): over the datastore atom
    `datastore` (a replay names the one it used) or the model's latest; `settings` as knn_settings()."""
    from .runtime import knnlm

    if datastore is not None:
        atom = Atom.objects.filter(pk=datastore, metadata__kind=KIND, metadata__model_digest=model.root.sha256).first()
    else:
        atom = knn_datastore_latest(model=model)
    if atom is None:
        raise Unprocessable("This model has no kNN-LM datastore in this tenant; build one first "
                            "(manage.py knn_build, or POST /api/models/{id}/knn).", details={"model": model.pk},
                            code="no_datastore")
    ds = _load(atom)
    conf = knn_settings(settings)
    k, temperature, adaptive = int(conf["k"]), float(conf["temperature"]), conf["adaptive"]

    def adjust(result) -> np.ndarray:
        return knnlm.knn_interpolate(ds, result.logits, result.hidden, lam=lam, k=k, temperature=temperature,
                                     adaptive=adaptive)

    return adjust, atom
