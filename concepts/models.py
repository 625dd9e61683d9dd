"""Concepts: clusters of atoms discovered per embedding model, with stable identities across runs.

A concept is both a row here (centroid, label, cohesion, state) and an atom of modality "concept"
(so the graph and search see it). Its members are atoms.AtomRelation(source=member, target=concept
atom, relation=MEMBER_OF, weight=euclidean distance to the centroid). Bindings between concepts are
AtomRelation RELATED_TO edges between concept atoms (weight = confidence, metadata = count, PMI, lift).
"""
from __future__ import annotations

from django.db import models
from django.utils import timezone
from pgvector.django import VectorField

from hartonomous.history import History


class DiscoveryRun(models.Model):
    """One discovery pass over a tenant's embeddings. Written all-or-nothing: its concepts and
    memberships land in one transaction when it finishes; a failed run changed nothing."""

    class State(models.TextChoices):
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        SKIPPED = "skipped"

    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING, db_index=True)
    trigger = models.CharField(max_length=16, default="manual", help_text="manual | schedule | api")
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    k = models.PositiveIntegerField(default=0, help_text="Alive concepts after the run (all models)")
    silhouette = models.FloatField(null=True, blank=True, help_text="Mean over the models clustered")
    inertia = models.FloatField(null=True, blank=True, help_text="Sum over the models clustered")
    atoms_seen = models.PositiveIntegerField(default=0)
    atoms_assigned = models.PositiveIntegerField(default=0, help_text="Atoms (re)assigned by this run")
    born = models.PositiveIntegerField(default=0)
    died = models.PositiveIntegerField(default=0)
    merged = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0, help_text="0..1")
    outcome = models.JSONField(default=dict, blank=True, help_text="Per model: mode, k, silhouette, reason")
    error = models.TextField(blank=True)
    history = History()

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"run {self.pk} {self.state}"


class Concept(models.Model):
    class State(models.TextChoices):
        BORN = "born"  # first seen in its last run
        ALIVE = "alive"  # matched to a concept of the previous run
        MERGED = "merged"  # absorbed into `merged_into`
        DEAD = "dead"  # unmatched and its members scattered

    atom = models.OneToOneField("atoms.Atom", on_delete=models.PROTECT, related_name="concept")
    modality = models.CharField(max_length=16, db_index=True, help_text="Most common modality of the members")
    model = models.CharField(max_length=100, db_index=True, help_text="Embedding model clustered")
    centroid = VectorField()
    label = models.CharField(max_length=300, blank=True)
    representatives = models.JSONField(default=list, blank=True, help_text="Member atom ids nearest the centroid")
    cohesion = models.FloatField(default=0.0, help_text="Mean cosine similarity of members to the centroid")
    spread = models.FloatField(default=0.0, help_text="Mean euclidean distance of members to the centroid")
    size = models.PositiveIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.BORN, db_index=True)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="absorbed")
    born_run = models.ForeignKey(DiscoveryRun, on_delete=models.PROTECT, related_name="concepts_born")
    run = models.ForeignKey(DiscoveryRun, on_delete=models.PROTECT, related_name="concepts",
                            help_text="Last run that touched this concept")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    history = History(excluded_fields=["centroid"])

    class Meta:
        indexes = [models.Index(fields=["model", "state"], name="concept_model_state")]
        constraints = [models.CheckConstraint(condition=models.Q(size__gte=0), name="concept_size_nonneg")]

    def __str__(self) -> str:
        return f"concept {self.pk} {self.label[:40]}"

    @property
    def is_live(self) -> bool:
        return self.state in (self.State.BORN, self.State.ALIVE)


class ConceptEvent(models.Model):
    """Births, merges and deaths, one row each, per run."""

    class Kind(models.TextChoices):
        BORN = "born"
        MERGED = "merged"
        DIED = "died"

    run = models.ForeignKey(DiscoveryRun, on_delete=models.CASCADE, related_name="events")
    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    other = models.ForeignKey(Concept, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              help_text="For a merge: the concept it merged into")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.concept_id}"


class AnalyticsResult(models.Model):
    """A stored analytics aggregate over tenant data (variance, causal test, repetition)."""

    kind = models.CharField(max_length=32, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    history = History()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.created_at:%Y-%m-%d %H:%M}"
