"""Usage ledger, prices and credits. The ledgers are append-only (enforced by a trigger too)."""
from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone

from hartonomous.history import History
from tenants.models import Tenant


class AppendOnly(models.Model):
    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError(f"{type(self).__name__} is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError(f"{type(self).__name__} is append-only")


class Price(models.Model):
    meter = models.CharField(max_length=64, unique=True)
    credits_per_unit = models.DecimalField(max_digits=14, decimal_places=6)
    unit = models.CharField(max_length=32, default="unit")
    description = models.CharField(max_length=200, blank=True)
    history = History()

    def __str__(self) -> str:
        return f"{self.meter}: {self.credits_per_unit}/{self.unit}"


class CreditBalance(models.Model):
    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="credit_balance")
    balance = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)
    history = History()

    def __str__(self) -> str:
        return f"{self.tenant.schema_name}: {self.balance}"


class CreditTransaction(AppendOnly):
    """Every change of a balance: grants (positive) and usage debits (negative)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="credit_transactions")
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    reason = models.CharField(max_length=200)
    usage_event = models.OneToOneField("UsageEvent", null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)


class UsageEvent(AppendOnly):
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_events")
    meter = models.CharField(max_length=64)
    quantity = models.DecimalField(max_digits=18, decimal_places=6)
    credits = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    idempotency_key = models.CharField(max_length=200)
    correlation_id = models.CharField(max_length=128, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="usage_idempotent_per_tenant")
        ]
        indexes = [models.Index(fields=["tenant", "meter", "created_at"])]

    def __str__(self) -> str:
        return f"{self.meter} x{self.quantity} ({self.tenant_id})"
