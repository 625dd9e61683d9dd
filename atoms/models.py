"""The atom store: content-addressed atoms, typed edges between them, and their embeddings.

These tables live in each tenant's schema, so `sha256` is unique per tenant: the same bytes are the
same atom. Payloads up to INLINE_LIMIT bytes are kept in the row; larger ones live in the blob store
under their digest.
"""
from __future__ import annotations

from django.contrib.postgres.indexes import GinIndex, GistIndex, OpClass
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models.functions import Left
from django.utils import timezone
from pgvector.django import VectorField

from hartonomous.history import History

from .fields import PointField

INLINE_LIMIT = 64 * 1024
TRIGRAM_HEAD = 256  # characters of an atom's text that trigram search matches against


class Modality(models.TextChoices):
    TEXT = "text"
    CODE = "code"
    DOCUMENT = "document"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    VIDEO_FRAME = "video_frame"
    SENSOR = "sensor"
    BINARY = "binary"
    MODEL = "model"
    TENSOR = "tensor"
    TOKEN = "token"
    EVENT = "event"
    CONCEPT = "concept"


class SourceKind(models.TextChoices):
    FILE = "file"
    URL = "url"
    UPLOAD = "upload"
    WEBHOOK = "webhook"
    DERIVED = "derived"
    STREAM = "stream"


class Atom(models.Model):
    sha256 = models.CharField(max_length=64)  # unique: atom_sha256_unique (no varchar_pattern_ops twin)
    modality = models.CharField(max_length=16, choices=Modality.choices)  # indexed by atom_modality_time
    mime = models.CharField(max_length=100)
    size = models.BigIntegerField()
    content = models.BinaryField(null=True, blank=True, help_text="Inline payload (small atoms)")
    in_blob = models.BooleanField(default=False, help_text="Payload lives in the blob store")
    text = models.TextField(null=True, blank=True, help_text="Searchable text (text-like atoms)")
    # to_tsvector('english', coalesce(text, '')), set by a trigger (migration 0003) on insert and when text
    # changes; NULL = not indexed yet: the bulk path defers it to the `atoms.index_text` task.
    search_vector = SearchVectorField(null=True, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.UPLOAD)
    source_uri = models.CharField(max_length=2000, blank=True)
    time_start = models.FloatField(null=True, blank=True, help_text="Seconds into the parent (media, sensors)")
    time_end = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    history = History(excluded_fields=["search_vector", "content", "text"],
                      no_db_index=["sha256", "modality", "created_at"])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sha256"], name="atom_sha256_unique")]
        indexes = [  # text search covers indexed atoms only (search_vector set)
            GinIndex(fields=["search_vector"], name="atom_fts", condition=models.Q(search_vector__isnull=False)),
            # trigram (fuzzy) matching covers the head of the text: headings, titles, names, first lines.
            # Over whole bodies every candidate's recheck read the full text (~800 ms a query on 2K
            # documentation sections); see TRIGRAM_HEAD and atoms.selectors.trigram_candidates.
            GinIndex(OpClass(Left("text", TRIGRAM_HEAD), name="gin_trgm_ops"), name="atom_trgm_head",
                     condition=models.Q(search_vector__isnull=False)),
            GinIndex(fields=["metadata"], name="atom_metadata", opclasses=["jsonb_path_ops"]),
            models.Index(fields=["modality", "created_at"], name="atom_modality_time"),
        ]

    def __str__(self) -> str:
        return f"{self.modality}:{self.sha256[:12]}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class RelationType(models.TextChoices):
    PART_OF = "PART_OF"
    NEXT = "NEXT"
    DERIVED_FROM = "DERIVED_FROM"
    NEAR_DUPLICATE_OF = "NEAR_DUPLICATE_OF"
    MEMBER_OF = "MEMBER_OF"
    IS_A = "IS_A"
    RELATED_TO = "RELATED_TO"
    SAME_AS = "SAME_AS"


class AtomRelation(models.Model):
    # no single-column indexes: atom_relation_unique leads with source, atom_relation_in with target
    source = models.ForeignKey(Atom, on_delete=models.CASCADE, related_name="relations_out", db_index=False)
    target = models.ForeignKey(Atom, on_delete=models.CASCADE, related_name="relations_in", db_index=False)
    relation = models.CharField(max_length=32, choices=RelationType.choices)
    weight = models.FloatField(default=1.0)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = History(no_db_index=["source", "target"])  # edge history is read by id and history_date

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "target", "relation"], name="atom_relation_unique"),
            models.CheckConstraint(condition=~models.Q(source=models.F("target")), name="atom_relation_no_self"),
        ]
        indexes = [models.Index(fields=["target", "relation"], name="atom_relation_in")]

    def __str__(self) -> str:
        return f"{self.source_id} -{self.relation}-> {self.target_id}"


class AtomEmbedding(models.Model):
    """(atom, embedding model) → vector, plus its 2D/3D projections for spatial queries."""

    atom = models.ForeignKey(Atom, on_delete=models.CASCADE, related_name="embeddings")
    model = models.CharField(max_length=100, help_text="Embedding model name@version")
    dim = models.PositiveSmallIntegerField()
    vector = VectorField()
    point = PointField(null=True, blank=True, help_text="2D projection")
    x3 = models.FloatField(null=True, blank=True)
    y3 = models.FloatField(null=True, blank=True)
    z3 = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = History(excluded_fields=["vector"])

    class Meta:
        constraints = [models.UniqueConstraint(fields=["atom", "model"], name="atom_embedding_unique")]
        indexes = [GistIndex(fields=["point"], name="atom_embedding_point"), models.Index(fields=["model"])]

    def __str__(self) -> str:
        return f"{self.model}:{self.atom_id}"


class IngestJob(models.Model):
    """One ingest run (CLI or API) with its counts; progress is pushed to the dashboard."""

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    source = models.CharField(max_length=2000)
    atoms_new = models.PositiveIntegerField(default=0)
    atoms_deduplicated = models.PositiveIntegerField(default=0)
    files_failed = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    history = History()
