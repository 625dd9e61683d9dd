"""A real Celery worker drains two tenants' outboxes into the real FalkorDB replica after committed graph
writes; each tenant's lineage in the replica holds its own nodes only."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from django.db import connection

from provenance.models import LedgerRecord, OutboxEvent, ProvEdge, ProvNode
from provenance.replica import _session, replica_counts, replica_lag, replica_lineage
from provenance.replica_cypher import node_key
from provenance.selectors import lineage
from provenance.services import activity_record
from provenance.tasks import replicate_task
from tests.fixtures import ROOT, live_env

pytestmark = pytest.mark.live
TABLES = (OutboxEvent, LedgerRecord, ProvEdge, ProvEdge.history.model, ProvNode, ProvNode.history.model)


@pytest.fixture
def replica_worker(replica, tmp_path):
    """A worker process on a queue of its own, its NEO4J_URI on the test replica. Yields the queue."""
    from hartonomous.celery import app

    queue, name = f"replica-{uuid.uuid4().hex[:8]}", f"replica-{uuid.uuid4().hex[:8]}@localhost"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hartonomous", "worker", "-l", "info", "-P", "prefork",
             "--concurrency", "2", "-n", name, "-Q", queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=live_env() | {"NEO4J_URI": replica}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[name], timeout=0.5):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        yield queue
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_ids(tenant) -> dict:
    connection.set_tenant(tenant)
    return {m: m.objects.order_by("-pk").values_list("pk", flat=True).first() or 0 for m in TABLES}


def _forget(tenant, last: dict) -> None:
    """Remove what the test committed (raw deletes: no history rows for the deletion)."""
    connection.set_tenant(tenant)
    with connection.cursor() as cursor:
        for model in TABLES:
            pk = model._meta.pk.column
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {pk} > %s", [last[model]])


def _chain(tenant, n: int, tag: str) -> list[ProvNode]:
    connection.set_tenant(tenant)
    refs = [f"w{tag}-{i}" for i in range(n + 1)]
    for prev, cur in zip(refs, refs[1:], strict=False):
        activity_record(tenant=tenant, kind="generate", agent="worker-test", used=[("atom", prev)],
                        generated=[("atom", cur)], derived=[(("atom", cur), ("atom", prev))])
    return [ProvNode.objects.get(kind="atom", ref=r) for r in refs]


def _pg_counts(tenant) -> dict:
    connection.set_tenant(tenant)
    return {"nodes": ProvNode.objects.count(), "edges": ProvEdge.objects.count()}


def _reached_tenants(schema: str, node_id: int) -> set[str]:
    """Every tenant reached by walking out of the node in the replica, with no tenant filter at all."""
    with _session() as session:
        rows = session.run("MATCH (n:ProvNode {key: $key})-[*1..10]->(m) RETURN DISTINCT m.tenant AS t",
                           key=node_key(schema, node_id))
        return {row["t"] for row in rows}


def test_a_real_worker_replicates_two_tenants_and_keeps_them_apart(replica_worker, committed, alpha, beta):
    last = {t.slug: _last_ids(t.tenant) for t in (alpha, beta)}
    tag = uuid.uuid4().hex[:6]  # the same refs in both tenants; their ids coincide too where the sequences do
    try:
        a = _chain(alpha.tenant, 4, tag)
        b = _chain(beta.tenant, 2, tag)
        results = [replicate_task.apply_async(args=[t.slug], queue=replica_worker) for t in (alpha, beta)]
        assert [r.get(timeout=90) > 0 for r in results] == [True, True]
        for t in (alpha, beta):
            assert replica_lag(schema=t.slug)["pending"] == 0
            assert replica_counts(schema=t.slug) == _pg_counts(t.tenant)
        # each tenant's upstream lineage in the replica is the one PostgreSQL has, and reaches no other tenant
        for t, chain in ((beta, b), (alpha, a)):
            connection.set_tenant(t.tenant)
            expected = {n.id for n in lineage(node=chain[-1], depth=10).nodes} - {chain[-1].pk}
            assert {n.pk for n in chain[:-1]} <= expected
            assert replica_lineage(schema=t.slug, node_id=chain[-1].pk, depth=10) == expected
            assert _reached_tenants(t.slug, chain[-1].pk) == {t.slug}
        # a node beta does not have: nothing
        connection.set_tenant(beta.tenant)
        assert replica_lineage(schema=beta.slug, node_id=ProvNode.objects.order_by("-pk")[0].pk + 10_000,
                               depth=10) == set()
    finally:
        for t in (alpha, beta):
            _forget(t.tenant, last[t.slug])
        connection.set_schema_to_public()
