"""The governed improvement loop: runs, their signals, candidate actions, approvals, outcomes, the
scorer's state and dead letters. Every table lives in the tenant's schema, so "one active run per
tenant" is a partial unique index on this schema's run table."""
from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from hartonomous.history import History


class Phase(models.TextChoices):
    ANALYZE = "analyze"
    HYPOTHESIZE = "hypothesize"
    ACT = "act"
    LEARN = "learn"
    DONE = "done"


PHASE_ORDER = [Phase.ANALYZE, Phase.HYPOTHESIZE, Phase.ACT, Phase.LEARN, Phase.DONE]


class ImprovementRun(models.Model):
    """One pass of Analyze → Hypothesize → Act → Learn; `phase` is the next phase to run."""

    class State(models.TextChoices):
        QUEUED = "queued"  # waits for the tenant's active run to finish
        RUNNING = "running"
        WAITING = "waiting_approval"
        DONE = "done"
        STOPPED = "stopped"  # a budget or a policy stopped it; the reason says which
        FAILED = "failed"

    ACTIVE = (State.RUNNING, State.WAITING)

    lane = models.CharField(max_length=16, default="default", editable=False)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    phase = models.CharField(max_length=16, choices=Phase.choices, default=Phase.ANALYZE)
    trigger = models.CharField(max_length=16, default="api")  # api | beat | command
    dry_run = models.BooleanField(default=False)
    requested_actions = models.JSONField(default=list, blank=True, help_text="Operator-proposed actions")
    # budget limits (copied from the tenant policy at creation) and usage
    max_actions = models.PositiveIntegerField(default=10)
    max_seconds = models.PositiveIntegerField(default=600)
    max_tokens = models.PositiveIntegerField(default=100_000)
    max_credits = models.DecimalField(max_digits=14, decimal_places=4, default=100)
    actions_used = models.PositiveIntegerField(default=0)
    seconds_used = models.FloatField(default=0)
    tokens_used = models.PositiveIntegerField(default=0)
    credits_used = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    stop_reason = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    phase_log = models.JSONField(default=list, blank=True, help_text="[{phase, started, finished, ms}]")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    history = History()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["lane"], condition=Q(state__in=["running", "waiting_approval"]),
                                    name="autonomy_one_active_run"),
        ]
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.state}/{self.phase})"


class Signal(models.Model):
    """Something Analyze measured; `value` is normalised so that higher means worse."""

    run = models.ForeignKey(ImprovementRun, on_delete=models.CASCADE, related_name="signals")
    kind = models.CharField(max_length=40)
    value = models.FloatField(default=0)
    available = models.BooleanField(default=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "kind"], name="autonomy_signal_once_per_run")]

    def __str__(self) -> str:
        return f"{self.kind}={self.value:.3f}"


class CandidateAction(models.Model):
    class State(models.TextChoices):
        PROPOSED = "proposed"
        AWAITING = "awaiting_approval"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        RUNNING = "running"  # claimed; never executed again, even after a crash
        DONE = "done"
        FAILED = "failed"
        REFUSED = "refused"  # the policy or an executor's guard said no
        SKIPPED = "skipped"  # budget or rank cut

    run = models.ForeignKey(ImprovementRun, on_delete=models.CASCADE, related_name="actions")
    signal = models.ForeignKey(Signal, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    executor = models.CharField(max_length=20)
    params = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=120, unique=True)
    rationale = models.CharField(max_length=500, blank=True)
    expected_gain = models.FloatField(default=0)
    risk = models.FloatField(default=0)
    score = models.FloatField(default=0)
    rank = models.PositiveIntegerField(default=0)
    estimated_tokens = models.PositiveIntegerField(default=0)
    estimated_credits = models.DecimalField(max_digits=14, decimal_places=4, default=0)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PROPOSED)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims; at most 1 by construction")
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    history = History()

    class Meta:
        ordering = ["rank", "id"]

    def __str__(self) -> str:
        return f"{self.executor} #{self.pk} ({self.state})"


class Approval(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"

    action = models.OneToOneField(CandidateAction, on_delete=models.CASCADE, related_name="approval")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    expected_effect = models.CharField(max_length=500, blank=True)
    evidence = models.JSONField(default=dict, blank=True)
    decided_by = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    history = History()

    def __str__(self) -> str:
        return f"approval {self.pk} for {self.action} ({self.state})"


class ActionOutcome(models.Model):
    """What an executed action achieved against what was expected: the scorer's training data."""

    action = models.OneToOneField(CandidateAction, on_delete=models.CASCADE, related_name="outcome")
    executor = models.CharField(max_length=20)
    features = models.JSONField(default=list)
    expected_gain = models.FloatField()
    observed_gain = models.FloatField()
    success = models.BooleanField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.executor}: {self.observed_gain:.3f} (expected {self.expected_gain:.3f})"


class ScorerState(models.Model):
    """The tenant's ranking model: ridge regression weights over action features (one row)."""

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    weights = models.JSONField(default=list, blank=True)
    samples = models.PositiveIntegerField(default=0)
    train_error = models.FloatField(null=True, blank=True)
    trained_at = models.DateTimeField(null=True, blank=True)
    history = History()

    def __str__(self) -> str:
        return f"scorer ({self.samples} samples)"


class IndexSettings(models.Model):
    """Per-tenant index knobs that the reindex executor tunes (one row)."""

    singleton = models.PositiveSmallIntegerField(default=1, unique=True, editable=False)
    ef_search = models.PositiveIntegerField(null=True, blank=True)
    last_reindex_at = models.DateTimeField(null=True, blank=True)
    history = History()


class DeadLetter(models.Model):
    """A task that failed after its last retry, kept with its error for requeue or discard."""

    class State(models.TextChoices):
        DEAD = "dead"
        REQUEUED = "requeued"
        DISCARDED = "discarded"

    task = models.CharField(max_length=200)
    task_id = models.CharField(max_length=200, blank=True)
    tenant = models.CharField(max_length=100, help_text="Schema name")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    retries = models.PositiveIntegerField(default=0)
    error = models.TextField()
    traceback = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.DEAD)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    history = History()

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"])]

    def __str__(self) -> str:
        return f"{self.task} ({self.state})"
