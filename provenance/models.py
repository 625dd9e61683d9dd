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
