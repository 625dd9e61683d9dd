"""Metering: every metered operation calls record_usage; guards refuse work without credits."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction
from django.db.models import F

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


def record_usage(*, tenant, meter: str, quantity, idempotency_key: str, attributes: dict | None = None) -> UsageEvent:
    """Append one usage event and debit its price; replaying the same idempotency key is a no-op."""
    quantity = _decimal(quantity, "quantity")
    if quantity < 0:
        raise ValidationFailed("quantity must not be negative.")
    if not idempotency_key or len(idempotency_key) > 200:
        raise ValidationFailed("idempotency_key must be 1-200 characters.")
    existing = UsageEvent.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
    if existing:
        return existing
    price = Price.objects.filter(meter=meter).values_list("credits_per_unit", flat=True).first() or Decimal(0)
    cost = price * quantity
    try:
        with transaction.atomic():
            event = UsageEvent.objects.create(
                tenant=tenant, meter=meter, quantity=quantity, credits=cost,
                idempotency_key=idempotency_key, correlation_id=correlation.get(),
                attributes=attributes or {},
            )
            if cost:
                CreditTransaction.objects.create(tenant=tenant, amount=-cost, reason=meter, usage_event=event)
                CreditBalance.objects.filter(tenant=tenant).update(balance=F("balance") - cost)
    except IntegrityError:  # a concurrent call with the same key won the race
        return UsageEvent.objects.get(tenant=tenant, idempotency_key=idempotency_key)
    return event


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
