"""The provenance graph (W3C PROV), its tamper-evident ledger and the outbox to the graph replica.

Edges point the PROV way, from the later thing to the earlier one: an entity `wasGeneratedBy` an
activity, an activity `used` an entity, an entity `wasDerivedFrom` another. So *upstream* (where did
this come from) follows edges source -> target and *downstream* (what depends on this) follows them
target -> source.

Point-in-time: nodes carry `created_at` and edges `valid_from`/`valid_to`; `as_of` queries read those
columns (fast, indexable, usable inside a recursive CTE). The simple-history tables keep the full
audit trail of every change beside them. Retraction never deletes: it sets `retracted_at` on the node
and `flagged_at` on its dependants, both historised.

These tables live in each tenant's schema, so the ledger chain, the outbox order and the replica's
`tenant` property are per tenant by construction.
"""
from __future__ import annotations

from django.db import models
from django.utils import timezone

from hartonomous.history import History

GENESIS = "0" * 64


class NodeKind(models.TextChoices):
    ATOM = "atom"
    MODEL = "model"
    RUN = "run"
    STEP = "step"
    AGENT = "agent"
    ACTIVITY = "activity"


class EdgeType(models.TextChoices):
    USED = "used"
    WAS_GENERATED_BY = "wasGeneratedBy"
    WAS_DERIVED_FROM = "wasDerivedFrom"
    WAS_ATTRIBUTED_TO = "wasAttributedTo"
    WAS_ASSOCIATED_WITH = "wasAssociatedWith"
    WAS_INFORMED_BY = "wasInformedBy"


class ProvNode(models.Model):
    kind = models.CharField(max_length=16, choices=NodeKind.choices)
    ref = models.CharField(max_length=200, help_text="Id in the owning app (atom pk, model name, run id, ...)")
    label = models.CharField(max_length=300, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    retracted_at = models.DateTimeField(null=True, blank=True)
    flagged_at = models.DateTimeField(null=True, blank=True, help_text="Depends on a retracted node")
    history = History()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "ref"], name="provnode_kind_ref")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref}"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.ref}"


class ProvEdge(models.Model):
    source = models.ForeignKey(ProvNode, on_delete=models.PROTECT, related_name="out_edges")
    target = models.ForeignKey(ProvNode, on_delete=models.PROTECT, related_name="in_edges")
    type = models.CharField(max_length=24, choices=EdgeType.choices)
    weight = models.FloatField(default=1.0)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_to = models.DateTimeField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    history = History()

    class Meta:
        indexes = [
            models.Index(fields=["source", "valid_from"], name="provedge_source"),
            models.Index(fields=["target", "valid_from"], name="provedge_target"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(weight__gte=0), name="provedge_weight_nonneg")]

    def __str__(self) -> str:
        return f"{self.source_id} -{self.type}-> {self.target_id}"


class Retraction(models.Model):
    node = models.OneToOneField(ProvNode, on_delete=models.PROTECT, related_name="retraction")
    reason = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)
    dependants = models.JSONField(default=list, help_text="[{node, kind, ref, mass}] flagged by this retraction")
    history = History()

    def __str__(self) -> str:
        return f"retraction of {self.node_id}"


class LedgerRecord(models.Model):
    """Append-only hash chain: digest = sha256(prev_digest || canonical JSON payload).

    Not historised on purpose: a record is never updated, and the chain itself is the history.
    """
    seq = models.BigIntegerField(unique=True)
    payload = models.JSONField()
    prev_digest = models.CharField(max_length=64)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.digest[:12]}"


class OutboxEvent(models.Model):
    """One graph change to replicate; `id` is the per-tenant position (the order of replay)."""
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    dead = models.BooleanField(default=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["id"], condition=models.Q(sent_at__isnull=True, dead=False),
                                name="outbox_pending")]

    def __str__(self) -> str:
        return f"outbox #{self.pk}"


class DeadLetter(models.Model):
    event = models.OneToOneField(OutboxEvent, on_delete=models.CASCADE, related_name="dead_letter")
    payload = models.JSONField()
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"dead letter for #{self.event_id}"


# ---------------------------------------------------------------------------------------------------
# AtomicStream: token-level provenance of generations
# ---------------------------------------------------------------------------------------------------
class RunStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"      # the client went away; the steps so far are kept
    FAILED = "failed"


class GenerationRun(models.Model):
    """One generation: what was asked, with which model (and its digest), parameters and seed, and the
    retrieval snapshot (`sources`: the atoms put in the context with their history versions)."""
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.RUNNING)
    finish_reason = models.CharField(max_length=24, blank=True)
    model_id = models.BigIntegerField(help_text="inference.Model id")
    model_name = models.CharField(max_length=200)
    model_digest = models.CharField(max_length=64, help_text="SHA-256 of the model's manifest atom")
    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    params = models.JSONField(default=dict, help_text="Sampling, retrieval and attribution parameters")
    seed = models.BigIntegerField()
    context_digest = models.CharField(max_length=64, help_text="SHA-256 of the context token ids")
    context_tokens = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    text = models.TextField(blank=True)
    principal = models.CharField(max_length=200, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    replay_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays")
    history = History()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"generation {self.pk} ({self.status})"


class GenerationSource(models.Model):
    """An atom in a run's context: rank, retrieval score, the atom's version, its token span and the
    attention mass the run's tokens gave it (summed over steps, and the steps it was the top source of)."""
    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="sources")
    atom_id = models.BigIntegerField(db_index=True)
    sha256 = models.CharField(max_length=64)
    history_id = models.BigIntegerField(null=True, blank=True, help_text="The atom's history row at retrieval")
    rank = models.PositiveIntegerField()
    score = models.FloatField(default=0.0)
    span_start = models.PositiveIntegerField()
    span_end = models.PositiveIntegerField()
    truncated = models.BooleanField(default=False)
    mass_total = models.FloatField(default=0.0)
    top_steps = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "rank"]
        constraints = [models.UniqueConstraint(fields=["run", "rank"], name="gensource_run_rank")]

    def __str__(self) -> str:
        return f"run {self.run_id} source {self.rank}: atom {self.atom_id}"


class GenerationStep(models.Model):
    """One generated token. Append-only (written in batches), so not historised.

    `alternatives`: [{token, text, logprob}] best first; `attributions`: [{atom, mass}] by mass, the
    sources whose share of the token's attention is at least the recording threshold."""
    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    token_id = models.PositiveIntegerField()
    text = models.CharField(max_length=200, blank=True)
    logprob = models.FloatField()
    alternatives = models.JSONField(default=list)
    attributions = models.JSONField(default=list)
    top_atom_id = models.BigIntegerField(null=True, blank=True)
    top_mass = models.FloatField(default=0.0)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "position"], name="genstep_run_position")]
        # no GIN on attributions: "which steps credited atom X" first narrows to the runs whose sources
        # hold X (GenerationSource.atom_id index), then reads those runs' steps by (run, position)
        indexes = [models.Index(fields=["top_atom_id"], name="genstep_top_atom")]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.position}"
