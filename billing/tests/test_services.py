"""The usage ledger: idempotent, priced, append-only, and a guard that refuses work without credits."""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from billing.models import UsageEvent
from billing.selectors import credit_balance
from billing.services import credits_grant, record_usage, require_credits
from hartonomous.errors import PaymentRequired, ValidationFailed
from hartonomous.onboarding import tenant_ensure

pytestmark = pytest.mark.django_db


def test_it_debits_the_price_once_per_idempotency_key(alpha):
    before = credit_balance(tenant=alpha.tenant)
    key = uuid.uuid4().hex
    first = record_usage(tenant=alpha.tenant, meter="generate.tokens", quantity=100, idempotency_key=key)
    again = record_usage(tenant=alpha.tenant, meter="generate.tokens", quantity=100, idempotency_key=key)
    assert first.pk == again.pk
    assert first.credits == Decimal("0.01")
    assert credit_balance(tenant=alpha.tenant) == before - Decimal("0.01")


def test_it_keeps_tenants_ledgers_apart(alpha, beta):
    key = uuid.uuid4().hex
    record_usage(tenant=alpha.tenant, meter="search.query", quantity=1, idempotency_key=key)
    record_usage(tenant=beta.tenant, meter="search.query", quantity=1, idempotency_key=key)
    assert UsageEvent.objects.filter(idempotency_key=key).values("tenant").distinct().count() == 2


def test_it_refuses_work_when_credits_run_out(django_db_setup):
    broke = tenant_ensure(slug="broke", name="Broke")
    with pytest.raises(PaymentRequired) as raised:
        require_credits(tenant=broke)
    assert raised.value.status == 402
    credits_grant(tenant=broke, amount=1, reason="test")
    require_credits(tenant=broke)
    with pytest.raises(PaymentRequired):
        require_credits(tenant=broke, needed=2)


def test_it_rejects_bad_quantities(alpha):
    for quantity in (-1, "abc", float("nan")):
        with pytest.raises(ValidationFailed):
            record_usage(tenant=alpha.tenant, meter="m", quantity=quantity, idempotency_key=uuid.uuid4().hex)


def test_it_refuses_to_rewrite_the_ledger_in_the_database(alpha):
    event = record_usage(tenant=alpha.tenant, meter="search.query", quantity=1, idempotency_key=uuid.uuid4().hex)
    with pytest.raises(ValueError):
        event.save()
    for sql in ("UPDATE billing_usageevent SET quantity = 0 WHERE id = %s",
                "DELETE FROM billing_usageevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])


def test_it_writes_the_event_its_debit_and_the_balance_together(alpha):
    from billing.models import CreditTransaction
    from hartonomous import correlation

    before = credit_balance(tenant=alpha.tenant)
    token = correlation.set_id("corr-usage-1")
    try:
        event = record_usage(tenant=alpha.tenant, meter="search.query", quantity=3,
                             idempotency_key=uuid.uuid4().hex, attributes={"k": 10})
    finally:
        correlation.reset(token)
    stored = UsageEvent.objects.get(pk=event.pk)
    assert (stored.credits, stored.correlation_id, stored.attributes) == (Decimal("0.003"), "corr-usage-1", {"k": 10})
    assert (event.credits, event.attributes, event.tenant_id) == (stored.credits, {"k": 10}, alpha.tenant.pk)
    debit = CreditTransaction.objects.get(usage_event=event)
    assert (debit.amount, debit.reason, debit.tenant_id) == (Decimal("-0.003"), "search.query", alpha.tenant.pk)
    assert credit_balance(tenant=alpha.tenant) == before - Decimal("0.003")


def test_it_records_free_usage_without_a_debit(alpha, beta):
    from billing.models import CreditTransaction

    before = credit_balance(tenant=alpha.tenant), credit_balance(tenant=beta.tenant)
    event = record_usage(tenant=alpha.tenant, meter="no.such.meter", quantity=5, idempotency_key=uuid.uuid4().hex)
    assert event.credits == 0 and not CreditTransaction.objects.filter(usage_event=event).exists()
    assert (credit_balance(tenant=alpha.tenant), credit_balance(tenant=beta.tenant)) == before
