"""The tamper-evident ledger: verify_provenance finds the first break; Merkle inclusion proofs."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from hartonomous.errors import NotFound
from provenance.ledger import (
    inclusion_verify,
    ledger_inclusion_proof,
    ledger_merkle_root,
    ledger_verify,
)
from provenance.models import LedgerRecord
from provenance.services import activity_record

pytestmark = pytest.mark.django_db


def _records(tenant, n):
    connection.set_tenant(tenant)
    for i in range(n):
        activity_record(tenant=tenant, kind="act", agent="ledger-test", generated=[f"atom:ledger-{i}"])


def test_it_verifies_an_intact_chain_for_each_tenant(alpha, beta):
    _records(alpha.tenant, 3)
    _records(beta.tenant, 2)
    out = StringIO()
    call_command("verify_provenance", stdout=out)
    assert "alpha: ok" in out.getvalue() and "beta: ok" in out.getvalue()


def test_it_reports_the_first_break(alpha, beta):
    _records(alpha.tenant, 4)
    _records(beta.tenant, 1)
    connection.set_tenant(alpha.tenant)
    victim = LedgerRecord.objects.order_by("seq")[1]
    LedgerRecord.objects.filter(pk=victim.pk).update(payload={**victim.payload, "attributes": {"forged": True}})
    later = LedgerRecord.objects.order_by("seq")[3]
    LedgerRecord.objects.filter(pk=later.pk).update(prev_digest="f" * 64)
    checked, first = ledger_verify()
    assert first.seq == victim.seq and "payload" in first.reason and checked == victim.seq - 1
    out = StringIO()
    with pytest.raises(CommandError, match="alpha"):
        call_command("verify_provenance", stdout=out)
    assert f"alpha: BROKEN at seq {victim.seq}" in out.getvalue()
    assert "beta: ok" in out.getvalue()  # the other tenant's chain is its own


def test_it_notices_a_deleted_record(alpha):
    _records(alpha.tenant, 3)
    connection.set_tenant(alpha.tenant)
    LedgerRecord.objects.filter(seq=2).delete()
    _checked, first = ledger_verify()
    assert first.seq == 2 and "missing" in first.reason


def test_it_proves_inclusion_with_merkle_paths(alpha):
    _records(alpha.tenant, 5)
    connection.set_tenant(alpha.tenant)
    size = LedgerRecord.objects.count()
    for seq in (1, size // 2 + 1, size):
        proof = ledger_inclusion_proof(seq=seq)
        assert proof["root"] == ledger_merkle_root() and inclusion_verify(proof)
        assert not inclusion_verify({**proof, "digest": "00" * 32})
    with pytest.raises(NotFound):
        ledger_inclusion_proof(seq=size + 1)
