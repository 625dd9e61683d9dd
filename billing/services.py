"""Metering: every metered operation calls record_usage; guards refuse work without credits."""
from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.db import connection, transaction
from django.utils import timezone

from hartonomous import correlation
from hartonomous.errors import PaymentRequired, ValidationFailed

from .models import CreditBalance, CreditTransaction, Price, UsageEvent

DEFAULT_PRICES = {
    "api.request": ("0", "request", "Authenticated API request"),
    "atoms.ingest": ("0.001", "atom", "Atom ingested"),
    "atoms.bytes": ("0.000000001", "byte", "Bytes stored"),
    "embed.tokens": ("0.00001", "token", "Tokens embedded"),
    "search.query": ("0.001", "query", "Search query"),
    "generate.tokens": ("0.0001", "token", "Generated token"),
    "prompt.tokens": ("0.00002", "token", "Prompt token"),
    "autonomy.action": ("0.01", "action", "Autonomous action"),
}


def _decimal(value, what: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{what} must be a number.", details={what: str(value)}) from None
    if not number.is_finite():
        raise ValidationFailed(f"{what} must be finite.", details={what: str(value)})
    return number


def prices_ensure_defaults() -> None:
    for meter, (credits, unit, description) in DEFAULT_PRICES.items():
        Price.objects.get_or_create(
            meter=meter, defaults={"credits_per_unit": Decimal(credits), "unit": unit, "description": description}
        )


def credits_grant(*, tenant, amount, reason: str) -> CreditBalance:
    amount = _decimal(amount, "amount")
    with transaction.atomic():
        balance, _ = CreditBalance.objects.select_for_update().get_or_create(tenant=tenant)
        CreditTransaction.objects.create(tenant=tenant, amount=amount, reason=reason)
        balance.balance += amount  # the row is locked: no lost update
        balance.save(update_fields=["balance", "updated_at"])
    return balance


_RECORD_USAGE_SQL = """
WITH event AS (
  INSERT INTO billing_usageevent
    (tenant_id, meter, quantity, credits, idempotency_key, correlation_id, attributes, created_at)
  SELECT %(tenant)s, %(meter)s, %(quantity)s,
         (coalesce((SELECT credits_per_unit FROM billing_price WHERE meter = %(meter)s), 0)
          * %(quantity)s)::numeric(18, 6),
         %(key)s, %(correlation)s, %(attributes)s::jsonb, %(now)s
  ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
  RETURNING {columns}
), debit AS (
  INSERT INTO billing_credittransaction (tenant_id, amount, reason, usage_event_id, created_at)
  SELECT tenant_id, -credits, meter, id, created_at FROM event WHERE credits <> 0
  RETURNING amount
), debited AS (
  UPDATE billing_creditbalance SET balance = balance + debit.amount FROM debit WHERE tenant_id = %(tenant)s
)
SELECT {columns} FROM event"""


def _record_usage_row(*, tenant, meter: str, quantity: Decimal, idempotency_key: str, attributes: dict):
    """Event, debit and balance in one statement (one round trip, atomic by itself); None on a replay."""
    fields = [f.attname for f in UsageEvent._meta.concrete_fields]
    sql = _RECORD_USAGE_SQL.format(columns=", ".join(f.column for f in UsageEvent._meta.concrete_fields))
    params = {"tenant": tenant.pk, "meter": meter, "quantity": quantity, "key": idempotency_key,
              "correlation": correlation.get(), "attributes": json.dumps(attributes), "now": timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    event = UsageEvent.from_db(connection.alias, fields, row)
    event.attributes = attributes  # the row holds it as JSON text (no field converters run here)
    return event


def record_usage(*, tenant, meter: str, quantity, idempotency_key: str, attributes: dict | None = None) -> UsageEvent:
    """Append one usage event and debit its price; replaying the same idempotency key is a no-op
    (a concurrent replay waits for the first insert, then does nothing)."""
    quantity = _decimal(quantity, "quantity")
    if quantity < 0:
        raise ValidationFailed("quantity must not be negative.")
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValidationFailed("idempotency_key must be 1-200 characters.")
    event = _record_usage_row(tenant=tenant, meter=meter, quantity=quantity, idempotency_key=idempotency_key,
                              attributes=attributes or {})
    return event or UsageEvent.objects.get(tenant=tenant, idempotency_key=idempotency_key)


def require_credits(*, tenant, needed=0) -> None:
    """Guard: refuse work (402) when the tenant's balance cannot cover it."""
    from .selectors import credit_balance

    balance = credit_balance(tenant=tenant)
    needed = _decimal(needed, "needed")
    if balance <= 0 or balance < needed:
        raise PaymentRequired(
            "The tenant's credits are exhausted.",
            details={"balance": str(balance), "needed": str(needed)},
        )
