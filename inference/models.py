"""Models as atoms: a registry of ingested models whose tensors live in the atom store.

- `Model`: one ingested model file (GGUF or safetensors). `root` is its manifest atom (modality "model",
  JSON: format, full metadata, tensor list with chunk digests); `tokenizer` the tokenizer JSON atom.
  `source_sha256` (the whole file's digest) is unique: ingesting the same file again returns this row.
- `ModelTensor`: one tensor (name, numpy-order shape, quantization type, byte size) and `chunks`, the ordered
  ids of its tensor atoms: the raw (still quantized) bytes cut into CHUNK_BYTES pieces, each content-addressed,
  so a tensor shared by two models (or a student and its parent) is stored once.
- `ModelLineage`: typed edges between models (quantized-from, fine-tuned-from, student-of). A table here
  rather than an AtomRelation between root atoms because the relation types are model-specific.
- `InferenceRequest`: one predict call (model, kind, tokens in/out, time, cost).
"""
from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from hartonomous.history import History

CHUNK_BYTES = 16 * 1024 * 1024  # fixed chunk size of tensor atoms


class ModelFormat(models.TextChoices):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"


class Model(models.Model):
    name = models.CharField(max_length=200)
    architecture = models.CharField(max_length=64)
    format = models.CharField(max_length=16, choices=ModelFormat.choices)
    quantization = models.CharField(max_length=32, help_text="Dominant tensor type by bytes (Q4_1, F32, ...)")
    hyperparameters = models.JSONField(default=dict, blank=True)
    source_sha256 = models.CharField(max_length=64, unique=True, help_text="Digest of the ingested file (or "
                                     "of the derived manifest for students)")
    source_uri = models.CharField(max_length=2000, blank=True)
    root = models.ForeignKey("atoms.Atom", on_delete=models.PROTECT, related_name="+")
    tokenizer = models.ForeignKey("atoms.Atom", on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    n_tensors = models.PositiveIntegerField(default=0)
    n_parameters = models.BigIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0, help_text="Sum of tensor bytes (logical size)")
    new_bytes = models.BigIntegerField(default=0, help_text="Bytes this model added to the store at ingest")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    history = History()

    def __str__(self) -> str:
        return f"{self.name} ({self.architecture}, {self.quantization})"

    @property
    def dedup_savings(self) -> int:
        return self.size_bytes - self.new_bytes


class ModelTensor(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="tensors")
    index = models.PositiveIntegerField(help_text="Position in the file")
    name = models.CharField(max_length=200)
    shape = ArrayField(models.BigIntegerField(), help_text="numpy order (rows..., cols)")
    qtype = models.CharField(max_length=16)
    nbytes = models.BigIntegerField()
    chunks = ArrayField(models.BigIntegerField(), help_text="Ordered tensor atom ids")
    history = History()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="model_tensor_unique")]
        ordering = ["model", "index"]

    def __str__(self) -> str:
        return f"{self.name} {self.qtype} {tuple(self.shape)}"


class LineageRelation(models.TextChoices):
    QUANTIZED_FROM = "quantized_from"
    FINE_TUNED_FROM = "fine_tuned_from"
    STUDENT_OF = "student_of"


class ModelLineage(models.Model):
    child = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="parents")
    parent = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="children")
    relation = models.CharField(max_length=32, choices=LineageRelation.choices)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = History()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["child", "parent", "relation"], name="model_lineage_unique"),
            models.CheckConstraint(condition=~models.Q(child=models.F("parent")), name="model_lineage_no_self"),
        ]

    def __str__(self) -> str:
        return f"{self.child_id} -{self.relation}-> {self.parent_id}"


class InferenceKind(models.TextChoices):
    EMBED = "embed"
    NEXT_TOKEN = "next_token"
    SCORE = "score"
    COMPLETE = "complete"


class InferenceRequest(models.Model):
    model = models.ForeignKey(Model, on_delete=models.SET_NULL, null=True, related_name="requests")
    kind = models.CharField(max_length=16, choices=InferenceKind.choices)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    duration_ms = models.FloatField(default=0)
    cost = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    correlation_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    history = History()

    def __str__(self) -> str:
        return f"{self.kind} on {self.model_id}: {self.tokens_in}→{self.tokens_out}"


class JobKind(models.TextChoices):
    KNN = "knn"
    STUDENT = "student"


class JobState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class ModelJob(models.Model):
    """Long model work queued by the API (a kNN-LM datastore, a student extraction): what the client
    polls at GET /api/models/jobs/{task_id}. The Celery task id is chosen before the job is queued."""

    task_id = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="jobs")
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.task_id} {self.state}"
