"""Tenants, their domains, security policy and API keys (public schema)."""
from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django_tenants.models import DomainMixin, TenantMixin

from hartonomous.history import History

SCOPES = ("read", "write", "generate", "admin")


class Tenant(TenantMixin):
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    history = History()

    auto_create_schema = True
    auto_drop_schema = False

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"


class Domain(DomainMixin):
    history = History()


def _default_executors() -> list[str]:
    return ["reindex", "recluster", "reembed", "query", "api_call"]


class TenantSecurityPolicy(models.Model):
    """Quotas, rate limits and governance knobs for one tenant. Edited in the admin, with history."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="policy")
    max_atoms = models.BigIntegerField(default=10_000_000, validators=[MinValueValidator(0)])
    max_bytes = models.BigIntegerField(default=100 * 1024**3, validators=[MinValueValidator(0)])
    max_tokens_per_day = models.BigIntegerField(default=10_000_000, validators=[MinValueValidator(0)])
    requests_per_minute = models.PositiveIntegerField(default=6000, help_text="Tenant-wide API rate")
    requests_per_minute_per_key = models.PositiveIntegerField(default=3000)
    burst = models.PositiveIntegerField(default=100, help_text="Requests allowed above the steady rate")
    allowed_executors = models.JSONField(default=_default_executors, blank=True)
    shell_whitelist = models.JSONField(default=list, blank=True, help_text="Executables the shell executor may run")
    approval_risk_threshold = models.FloatField(default=0.5, help_text="Actions riskier than this wait for approval")
    max_actions_per_run = models.PositiveIntegerField(default=10)
    max_seconds_per_run = models.PositiveIntegerField(default=600)
    max_tokens_per_run = models.PositiveIntegerField(default=100_000)
    max_credits_per_run = models.DecimalField(max_digits=14, decimal_places=4, default=100)
    updated_at = models.DateTimeField(auto_now=True)
    history = History()

    class Meta:
        verbose_name_plural = "tenant security policies"

    def __str__(self) -> str:
        return f"policy for {self.tenant.schema_name}"


class ApiKey(models.Model):
    """A hashed API key. The full key (`hk_<prefix>_<secret>`) is shown once, at creation."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="Visible part of the key")
    hashed_key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    history = History(excluded_fields=["last_used_at"])

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
