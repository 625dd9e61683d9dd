"""The outbox consumer against a real Bolt server (FalkorDB) through the official neo4j driver."""
from __future__ import annotations

import os
import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from provenance.models import DeadLetter, OutboxEvent, ProvEdge, ProvNode
from provenance.replica import (
    ReplicaUnavailable,
    replica_counts,
    replica_health,
    replica_lag,
    replica_lineage,
    replicate_batch,
    replicate_tenant,
)
from provenance.services import activity_record, atom_retract

pytestmark = pytest.mark.django_db


def _graph(tenant, n=3, tag=None):
    connection.set_tenant(tenant)
    tag = tag or uuid.uuid4().hex[:8]
    refs = [f"r{tag}-{i}" for i in range(n + 1)]
    for prev, cur in zip(refs, refs[1:], strict=False):
        activity_record(tenant=tenant, kind="generate", agent="tester", used=[("atom", prev)],
                        generated=[("atom", cur)], derived=[(("atom", cur), ("atom", prev))])
    return [ProvNode.objects.get(kind="atom", ref=r) for r in refs]


def _pg_counts(tenant):
    connection.set_tenant(tenant)
    return {"nodes": ProvNode.objects.count(), "edges": ProvEdge.objects.count()}


def test_it_replicates_the_outbox_idempotently(alpha, replica):
    chain = _graph(alpha.tenant, 4)
    moved = replicate_tenant(schema=alpha.slug)
    assert moved > 0 and replica_lag(schema=alpha.slug)["pending"] == 0
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    # replaying everything changes nothing
    connection.set_tenant(alpha.tenant)
    OutboxEvent.objects.update(sent_at=None)
    replicate_tenant(schema=alpha.slug)
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    upstream = replica_lineage(schema=alpha.slug, node_id=chain[-1].pk, depth=2)
    assert chain[-2].pk in upstream and chain[-3].pk in upstream and chain[0].pk not in upstream


def test_it_sends_batches_of_500_in_order(alpha, replica):
    connection.set_tenant(alpha.tenant)
    activity_record(tenant=alpha.tenant, kind="act", agent="bulk",
                    generated=[("atom", f"bulk-{uuid.uuid4().hex[:6]}-{i}", "x" * 100) for i in range(400)])
    pending = OutboxEvent.objects.filter(sent_at__isnull=True).count()
    assert pending > 500
    first = replicate_batch(schema=alpha.slug)
    assert first == 500
    sent = list(OutboxEvent.objects.filter(sent_at__isnull=False).values_list("id", flat=True))
    unsent = list(OutboxEvent.objects.filter(sent_at__isnull=True).values_list("id", flat=True))
    assert max(sent) < min(unsent)  # in order
    replicate_tenant(schema=alpha.slug)
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)


def test_it_keeps_tenants_apart_in_the_replica(alpha, beta, replica):
    a = _graph(alpha.tenant, 2, tag="same")
    b = _graph(beta.tenant, 1, tag="same")
    replicate_tenant(schema=alpha.slug)
    replicate_tenant(schema=beta.slug)
    assert replica_counts(schema=beta.slug) == _pg_counts(beta.tenant)
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    beta_up = replica_lineage(schema=beta.slug, node_id=b[-1].pk, depth=10)
    connection.set_tenant(beta.tenant)
    assert beta_up <= set(ProvNode.objects.values_list("pk", flat=True))
    # ids may coincide across schemas; the tenant property keeps the walk inside beta
    connection.set_tenant(alpha.tenant)
    alpha_ids = set(ProvNode.objects.values_list("pk", flat=True))
    assert replica_lineage(schema=alpha.slug, node_id=a[-1].pk, depth=10) <= alpha_ids
    assert replica_counts(schema="nobody") == {"nodes": 0, "edges": 0}


def test_it_queues_work_while_the_replica_is_down(alpha, replica, monkeypatch):
    _graph(alpha.tenant, 2)
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")  # nothing listens there
    with pytest.raises(ReplicaUnavailable):
        replicate_batch(schema=alpha.slug)
    lag = replica_lag(schema=alpha.slug)
    assert lag["pending"] > 0 and lag["dead"] == 0
    with pytest.raises(ReplicaUnavailable):
        replica_health()
    monkeypatch.setenv("NEO4J_URI", replica)
    replicate_tenant(schema=alpha.slug)
    assert replica_lag(schema=alpha.slug)["pending"] == 0
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    assert "0 pending" in replica_health()


def test_it_dead_letters_a_poison_event_and_replays_it(alpha, replica):
    _graph(alpha.tenant, 1)
    connection.set_tenant(alpha.tenant)
    OutboxEvent.objects.update(sent_at=None)
    poison = OutboxEvent.objects.create(payload={"op": "teleport", "id": 1})
    after = _graph(alpha.tenant, 1)
    for _ in range(5):
        replicate_tenant(schema=alpha.slug)
    poison.refresh_from_db()
    assert poison.dead and poison.attempts == 5
    assert DeadLetter.objects.filter(event=poison, resolved_at__isnull=True).exists()
    assert after[-1].pk in {n for n in replica_lineage(schema=alpha.slug, node_id=after[-1].pk, depth=1)} | {
        after[-1].pk}
    assert replica_lag(schema=alpha.slug)["dead"] == 1
    OutboxEvent.objects.filter(pk=poison.pk).update(payload={"op": "node", "id": 999999999, "kind": "atom",
                                                             "ref": "fixed", "label": ""})
    out = StringIO()
    call_command("replay_outbox", schema=alpha.slug, position=poison.pk, now=True, stdout=out)
    assert "queued again" in out.getvalue()
    assert DeadLetter.objects.get(event=poison).resolved_at is not None
    assert replica_lag(schema=alpha.slug)["pending"] == 0


def test_it_checks_the_replica_against_postgres(alpha, beta, replica):
    chain = _graph(alpha.tenant, 2)
    replicate_tenant(schema=alpha.slug)
    replicate_tenant(schema=beta.slug)
    out = StringIO()
    call_command("check_replica", stdout=out)
    assert "alpha:" in out.getvalue() and "DIFFERENT" not in out.getvalue()
    connection.set_tenant(alpha.tenant)
    atom_retract(tenant=alpha.tenant, atom=type("A", (), {"pk": chain[0].ref, "sha256": chain[0].ref})())
    activity_record(tenant=alpha.tenant, kind="act", agent="late", generated=["atom:late-" + uuid.uuid4().hex])
    with pytest.raises(CommandError, match="alpha"):
        call_command("check_replica", schema="alpha", stdout=StringIO())
    replicate_tenant(schema=alpha.slug)
    call_command("check_replica", schema="alpha", stdout=StringIO())
    assert os.environ["NEO4J_URI"] == replica



def test_without_a_replica_the_outbox_is_pruned_and_a_resync_rebuilds_it(alpha, beta, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from provenance.outbox import outbox_prune, outbox_resync

    monkeypatch.delenv("NEO4J_URI", raising=False)  # no replica configured
    _graph(alpha.tenant, 3)
    _graph(beta.tenant, 1)
    connection.set_tenant(alpha.tenant)
    pending = OutboxEvent.objects.count()
    assert pending > 0 and outbox_prune(tenant=alpha.tenant) == 0  # young events stay
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(days=30))
    assert outbox_prune(tenant=alpha.tenant) == pending and not OutboxEvent.objects.exists()
    connection.set_tenant(beta.tenant)
    assert OutboxEvent.objects.exists()  # beta's outbox is beta's business
    counts = _pg_counts(alpha.tenant)
    assert outbox_resync(tenant=alpha.tenant) == counts["nodes"] + counts["edges"]


def test_with_a_replica_only_sent_events_are_pruned_and_a_resync_replicates_all(alpha, replica):
    from datetime import timedelta

    from django.utils import timezone

    from provenance.outbox import outbox_prune

    _graph(alpha.tenant, 3)
    connection.set_tenant(alpha.tenant)
    first = OutboxEvent.objects.order_by("id").first()
    replicate_batch(schema=alpha.slug)
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(days=30))
    _graph(alpha.tenant, 1)  # new, unsent
    connection.set_tenant(alpha.tenant)
    OutboxEvent.objects.filter(sent_at__isnull=True).update(created_at=timezone.now() - timedelta(days=30))
    unsent = OutboxEvent.objects.filter(sent_at__isnull=True).count()
    assert outbox_prune(tenant=alpha.tenant) > 0
    assert OutboxEvent.objects.count() == unsent and not OutboxEvent.objects.filter(pk=first.pk).exists()
    from provenance.replica import _session

    with _session() as session:  # the replica lost everything: a resync brings it all back
        session.run("MATCH (n) DETACH DELETE n").consume()
    out = StringIO()
    call_command("replica_resync", "--schema", alpha.slug, "--now", stdout=out)
    assert "queued" in out.getvalue() and replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)

