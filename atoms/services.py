"""Every write to the atom store: ingest (dedup, parts, edges), delete, embed, near-duplicates."""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from billing.services import record_usage
from hartonomous.errors import NotFound, TooLarge, Unprocessable, ValidationFailed
from hartonomous.jsonsafe import json_safe

from . import signals
from .blobstore import BlobStoreError
from .embedding import TEXT_MODALITIES, project, text_provider
from .extract import PART_OF, ROOT, ExtractionError, Part, Source, extract
from .models import INLINE_LIMIT, Atom, AtomEmbedding, AtomRelation, RelationType
from .storage import blobstore

log = logging.getLogger(__name__)
TEXTUAL = set(TEXT_MODALITIES)
TEXT_LIMIT = 256 * 1024  # characters kept searchable per atom


@dataclass
class IngestResult:
    root: Atom
    created: bool  # False: these bytes were already an atom of this tenant
    restored: bool = False  # a soft-deleted atom came back
    atoms_new: int = 0
    atoms_existing: int = 0
    new_ids: list[int] = field(default_factory=list)


class _LimitedReader(io.RawIOBase):
    """Reads through to `inner`, refusing (413) past `limit` bytes, so uploads stream."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.read_so_far = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise TooLarge(f"The content is larger than the limit of {self.limit} bytes.",
                           details={"limit": self.limit})
        buffer[: len(data)] = data
        return len(data)


def _store_source(source: Source, limit: int):
    try:
        with source.open() as stream:
            return blobstore().put_stream(_LimitedReader(stream, limit))
    except ExtractionError as exc:
        raise Unprocessable(exc.message, code=exc.code) from exc
    except BlobStoreError as exc:
        raise Unprocessable(str(exc), code="blob.error") from exc


def _payload(part: Part, created_blobs: list[str]) -> tuple[str, int, bytes | None, bool]:
    """(sha256, size, inline bytes or None, in_blob) of a part; big parts go to the blob store."""
    if part.content is not None and len(part.content) <= INLINE_LIMIT:
        return hashlib.sha256(part.content).hexdigest(), len(part.content), part.content, False
    if part.content is not None:
        ref = blobstore().put_bytes(part.content)
    else:
        with open(part.path, "rb") as f:
            ref = blobstore().put_stream(f)
    if ref.created:
        created_blobs.append(ref.sha256)
    return ref.sha256, ref.size, None, True


def _text_of(part: Part) -> str | None:
    if part.modality not in TEXTUAL or part.content is None:
        return part.metadata.get("text") if isinstance(part.metadata.get("text"), str) else None
    try:
        return part.content.decode("utf-8")[:TEXT_LIMIT]
    except UnicodeDecodeError:
        return None


def _atom_fields(part: Part, source_kind: str, source_uri: str) -> dict:
    metadata = {k: v for k, v in part.metadata.items() if k != "text"}
    if part.position is not None:
        metadata.setdefault("position", part.position)
    return {
        "modality": part.modality, "mime": part.mime[:100], "metadata": json_safe(metadata),
        "source_kind": source_kind, "source_uri": source_uri[:2000],
        "time_start": part.time_start, "time_end": part.time_end, "text": _text_of(part),
    }


def _save_feature_embedding(atom: Atom, part: Part) -> None:
    kind = part.metadata.get("embedding_kind")
    if part.embedding is None or not kind:
        return
    vector = np.asarray(part.embedding, dtype=np.float32)
    p = project(vector[None, :])[0]
    AtomEmbedding.objects.get_or_create(
        atom=atom, model=kind,
        defaults={"dim": vector.shape[0], "vector": vector, "point": (p[0], p[1]), "x3": p[0], "y3": p[1], "z3": p[2]},
    )


class _PartWriter:
    """Writes the parts of one source as atoms and edges, inside the caller's transaction."""

    def __init__(self, result: IngestResult, source_kind: str, source_uri: str, created_blobs: list[str]):
        self.result, self.source_kind, self.source_uri = result, source_kind, source_uri
        self.ids: dict[str, int] = {ROOT: result.root.pk}
        self.pending: dict[tuple[int, int, str], AtomRelation] = {}
        self.flushed: set[tuple[int, int, str]] = set()
        self.late: list[tuple[tuple[int, int, str], list]] = []
        self.created_blobs = created_blobs

    def write(self, part: Part) -> None:
        sha, size, inline, in_blob = _payload(part, self.created_blobs)
        if sha == self.result.root.sha256:  # the whole source is this one part (a short text)
            self._absorb_into_root(part)
            return
        atom, created = Atom.objects.get_or_create(
            sha256=sha, defaults={"size": size, "content": inline, "in_blob": in_blob,
                                  **_atom_fields(part, self.source_kind, self.source_uri)},
        )
        self.ids[part.key] = atom.pk
        if created:
            self.result.atoms_new += 1
            self.result.new_ids.append(atom.pk)
        else:
            self.result.atoms_existing += 1
        _save_feature_embedding(atom, part)
        self._edges(part)

    def _absorb_into_root(self, part: Part) -> None:
        root = self.result.root
        self.ids[part.key] = root.pk
        if root.text is None and _text_of(part):
            root.text = _text_of(part)
            root.save(update_fields=["text"])
        _save_feature_embedding(root, part)

    def _edges(self, part: Part) -> None:
        """Queue the part's edges. An atom met again in the same source (an identical video frame or
        audio segment later on) keeps one edge per (source, relation, target), and its PART_OF edge
        lists every time the atom occurs in `metadata.occurrences` ([[start, end], ...])."""
        for source_key, relation, target_key in part.edges():
            source_id, target_id = self.ids.get(source_key), self.ids.get(target_key)
            if not source_id or not target_id or source_id == target_id:
                continue
            key = (source_id, target_id, relation)
            timed = relation == PART_OF and part.time_start is not None
            occurrence = [part.time_start, part.time_end] if timed else None
            edge = self.pending.get(key)
            if edge is None and key in self.flushed:
                if occurrence:
                    self.late.append((key, occurrence))
                continue
            if edge is None:
                meta = {"position": part.position} if part.position is not None else {}
                if occurrence:
                    meta["occurrences"] = [occurrence]
                self.pending[key] = AtomRelation(source_id=source_id, target_id=target_id, relation=relation,
                                                 metadata=meta)
            elif occurrence:
                edge.metadata.setdefault("occurrences", []).append(occurrence)
        if len(self.pending) >= 5000:
            self.flush()

    def flush(self) -> None:
        AtomRelation.objects.bulk_create(list(self.pending.values()), ignore_conflicts=True)
        self.flushed.update(self.pending)
        self.pending = {}
        for (source_id, target_id, relation), occurrence in self.late:
            AtomRelation.objects.filter(source_id=source_id, target_id=target_id, relation=relation).update(
                metadata=RawSQL("jsonb_set(metadata, '{occurrences}', "
                                "coalesce(metadata->'occurrences', '[]'::jsonb) || %s::jsonb)",
                                (json.dumps([occurrence]),)))
        self.late = []


def _existing_root(sha: str) -> Atom | None:
    return Atom.objects.filter(sha256=sha).first()


def _restore(atom: Atom) -> None:
    atom.deleted_at = None
    atom.save(update_fields=["deleted_at"])


def atom_ingest(*, tenant, source: Source, source_kind: str = "upload", source_uri: str = "",
                metadata: dict | None = None, max_bytes: int | None = None) -> IngestResult:
    """Store a source's bytes, then its parts as atoms with PART_OF/NEXT edges, all or nothing.

    The same bytes ingested again add nothing (`created` is False). An extraction failure rolls the
    rows back and removes the blobs this call created, so the ingest can simply be re-run.
    """
    limit = max_bytes or settings.MAX_UPLOAD_BYTES
    ref = _store_source(source, limit)
    if ref.size == 0:
        blobs_discard_unreferenced([ref.sha256] if ref.created else [])
        raise ValidationFailed("The content is empty.", code="empty")
    existing = _existing_root(ref.sha256)
    if existing is not None:
        restored = existing.deleted_at is not None
        if restored:
            _restore(existing)
        return IngestResult(existing, created=False, restored=restored)
    created_blobs = [ref.sha256] if ref.created else []
    try:
        result = _ingest_new(tenant, source, ref, source_kind, source_uri, metadata or {}, created_blobs)
    except ExtractionError as exc:
        blobs_discard_unreferenced(created_blobs)
        raise Unprocessable(exc.message, code=exc.code, details=json_safe(exc.details)) from exc
    except BaseException:
        blobs_discard_unreferenced(created_blobs)
        raise
    _after_ingest(tenant, result)
    return result


def _ingest_new(tenant, source: Source, ref, source_kind: str, source_uri: str, metadata: dict,
                created_blobs: list[str]) -> IngestResult:
    parts = extract(source)
    with transaction.atomic():
        root_part = next(parts)
        fields = _atom_fields(root_part, source_kind, source_uri or source.name)
        fields["metadata"] = {**fields["metadata"], **json_safe(metadata), "name": source.name}
        inline = None
        if ref.size <= INLINE_LIMIT:
            with blobstore().open(ref.sha256) as f:
                inline = f.read()
        root = Atom.objects.create(sha256=ref.sha256, size=ref.size, content=inline, in_blob=True, **fields)
        result = IngestResult(root, created=True, atoms_new=1, new_ids=[root.pk])
        _save_feature_embedding(root, root_part)
        writer = _PartWriter(result, "derived", source_uri or source.name, created_blobs)
        for part in parts:
            writer.write(part)
        writer.flush()
    return result


def blobs_discard_unreferenced(digests) -> None:
    """Remove blobs a failed write created, unless an atom of this tenant refers to them."""
    for sha in set(digests):
        if Atom.objects.filter(sha256=sha).exists():
            continue
        try:
            blobstore().delete(sha)
        except BlobStoreError:
            log.warning("could not remove orphan blob %s; GC will", sha)


def _after_ingest(tenant, result: IngestResult) -> None:
    record_usage(tenant=tenant, meter="atoms.ingest", quantity=result.atoms_new,
                 idempotency_key=f"ingest:{tenant.schema_name}:{result.root.sha256}",
                 attributes={"root": result.root.pk})
    ids = list(result.new_ids)
    schema = connection.schema_name
    transaction.on_commit(lambda: _enqueue_embedding(schema, ids))
    transaction.on_commit(lambda: signals.atoms_ingested.send(
        sender=Atom, tenant=tenant, root=result.root, new_ids=ids, source_kind=result.root.source_kind,
        source_uri=result.root.source_uri))
    if result.root.modality == "model":  # handed to the model layer, which makes tensor atoms
        transaction.on_commit(lambda: signals.model_file_ingested.send(
            sender=Atom, tenant=tenant, schema=schema, atom=result.root))


def _enqueue_embedding(schema: str, atom_ids: list[int]) -> None:
    """Queue the embedding work; if the broker is down the atoms stay committed and the periodic
    `atoms.embed_missing` sweep picks them up later, so an ingest never fails for it."""
    from .tasks import embed_atoms_task

    try:
        for start in range(0, len(atom_ids), 256):
            embed_atoms_task.delay(schema, atom_ids[start:start + 256])
    except Exception as exc:  # kombu raises its own OperationalError family
        log.warning("embedding not queued (%s); the sweep will retry", exc, extra={"schema": schema})


def atoms_missing_embeddings(*, model: str, limit: int = 10_000) -> list[int]:
    """Text-bearing atoms without an embedding of `model` (what the sweep re-queues)."""
    return list(
        Atom.objects.filter(deleted_at__isnull=True, text__isnull=False)
        .exclude(embeddings__model=model).order_by("id").values_list("id", flat=True)[:limit]
    )


def atom_delete(*, atom: Atom) -> Atom:
    """Soft delete: the row and its history stay; searches and lists no longer show it."""
    if atom.deleted_at is None:
        atom.deleted_at = timezone.now()
        atom.save(update_fields=["deleted_at"])
        tenant = getattr(connection, "tenant", None)
        transaction.on_commit(lambda: signals.atom_deleted.send(sender=Atom, tenant=tenant, atom=atom))
    return atom


def atom_get(*, ref: str) -> Atom:
    from .selectors import atom_by_ref

    atom = atom_by_ref(ref=ref)
    if atom is None:
        raise NotFound("No such atom.", details={"atom": ref})
    return atom


# ---------------------------------------------------------------- embeddings
def embed_atoms(*, atom_ids: list[int], batch_size: int = 32) -> int:
    """Embed the text of these atoms with the registered provider, once per (atom, model)."""
    provider = text_provider()
    done = set(AtomEmbedding.objects.filter(atom_id__in=atom_ids, model=provider.name).values_list("atom_id", flat=True))
    todo = list(Atom.objects.filter(id__in=atom_ids, text__isnull=False, deleted_at__isnull=True)
                .exclude(id__in=done).exclude(text="").values_list("id", "text"))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        vectors = provider.embed_texts([text for _, text in batch])
        _store_embeddings([atom_id for atom_id, _ in batch], vectors, provider.name)
    if todo:
        ids, schema = [atom_id for atom_id, _ in todo], connection.schema_name
        transaction.on_commit(lambda: signals.atoms_embedded.send(sender=Atom, schema=schema, atom_ids=ids,
                                                                  model=provider.name))
    return len(todo)


def _store_embeddings(atom_ids: list[int], vectors: np.ndarray, model: str) -> None:
    points = project(vectors)
    rows = [
        AtomEmbedding(atom_id=atom_id, model=model, dim=vectors.shape[1], vector=vector,
                      point=(float(p[0]), float(p[1])), x3=float(p[0]), y3=float(p[1]), z3=float(p[2]))
        for atom_id, vector, p in zip(atom_ids, vectors, points, strict=True)
    ]
    AtomEmbedding.objects.bulk_create(rows, ignore_conflicts=True)


def near_duplicates_link(*, atom_ids: list[int], model: str, threshold: float | None = None) -> int:
    """NEAR_DUPLICATE_OF edges from each atom to earlier atoms whose cosine exceeds the threshold."""
    from .selectors import nearest_by_vector

    threshold = settings.NEAR_DUPLICATE_THRESHOLD if threshold is None else threshold
    embeddings = AtomEmbedding.objects.filter(atom_id__in=atom_ids, model=model).values_list("atom_id", "vector")
    edges = []
    for atom_id, vector in embeddings:
        for other_id, cosine in nearest_by_vector(vector=np.asarray(vector), model=model, k=5):
            if other_id != atom_id and cosine >= threshold:
                src, dst = max(atom_id, other_id), min(atom_id, other_id)  # newer → older
                edges.append(AtomRelation(source_id=src, target_id=dst, relation=RelationType.NEAR_DUPLICATE_OF,
                                          weight=float(cosine)))
    AtomRelation.objects.bulk_create(edges, ignore_conflicts=True)
    return len(edges)


# ---------------------------------------------------------------- blob garbage collection
def blob_references() -> dict[str, int]:
    """Reference count of every blob digest, over every tenant schema (the blob store is shared)."""
    from django.db.models import Count
    from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

    counts: dict[str, int] = {}
    schemas = get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).values_list(
        "schema_name", flat=True)
    for schema in schemas:
        with schema_context(schema):
            for sha, n in Atom.objects.filter(in_blob=True).values_list("sha256").annotate(n=Count("id")):
                counts[sha] = counts.get(sha, 0) + n
    return counts


def blobs_collect_garbage(*, min_age_seconds: float = 3600) -> list[str]:
    """Delete blobs no atom of any tenant refers to (older than the grace period)."""
    return blobstore().gc(set(blob_references()), min_age_seconds=min_age_seconds)
