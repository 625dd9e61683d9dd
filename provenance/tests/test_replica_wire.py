"""What goes over the wire to the replica: statements cut under FalkorDB's text limit, strings that
survive its parameter renderer, and replicas written before nodes had a `key`."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection

from provenance import replica as replica_module
from provenance.models import OutboxEvent, ProvEdge, ProvNode
from provenance.replica import (
    _session,
    replica_counts,
    replica_ensure_schema,
    replica_lag,
    replicate_tenant,
)
from provenance.replica_cypher import (
    LABEL_CHARS,
    TEXT_LIMIT,
    TEXT_OVERHEAD,
    rows_from_payloads,
    statements,
    text_chars,
)
from provenance.services import activity_record

pytestmark = pytest.mark.django_db
AWKWARD = ["O'Brien's \\ path \\'", 'say "hi"\nthen go', "é" * 90 + "😀", "\\\\server\\share", "'", "\\"]


def _pg_counts(tenant):
    connection.set_tenant(tenant)
    return {"nodes": ProvNode.objects.count(), "edges": ProvEdge.objects.count()}


def test_statements_stay_under_the_text_limit_and_keep_every_row_in_order():
    payloads = [{"op": "node", "id": i, "kind": "atom", "ref": ("r'\\é" * 60)[:200], "label": "l" * 300,
                 "created_at": "2026-01-01T00:00:00+00:00"} for i in range(300)]
    payloads += [{"op": "edge", "id": i, "source": i, "target": i + 1, "type": "used", "weight": 1e300,
                  "valid_from": "2026-01-01T00:00:00+00:00", "valid_to": None} for i in range(300)]
    nodes, edges = rows_from_payloads(payloads, escape=True)
    tenant = "t" * 63  # the longest schema name
    stmts = list(statements(tenant, nodes, edges, TEXT_LIMIT))
    assert len(stmts) > 10
    for cypher, rows in stmts:
        assert len(cypher) + text_chars(rows) + len(tenant) + TEXT_OVERHEAD <= TEXT_LIMIT
    assert [r for c, rows in stmts if "SET n.tenant" in c for r in rows] == nodes
    assert [r[0] for c, rows in stmts if ":used " in c for r in rows] == list(range(300))
    assert len(list(statements(tenant, nodes, edges, None))) == 2  # Neo4j: one statement per row kind
    with pytest.raises(ValueError, match="unknown edge type"):
        rows_from_payloads([{**payloads[-1], "type": "DETACH DELETE"}])


def test_awkward_strings_and_full_statements_replicate_intact(alpha, replica):
    assert replica_ensure_schema()["text_params"] is True  # FalkorDB renders parameters as Cypher text
    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex[:6]
    generated = [("atom", (f"{tag}-{i}-" + AWKWARD[i % len(AWKWARD)] * 40)[:200],
                  (AWKWARD[(i + 1) % len(AWKWARD)] * 40)[:300]) for i in range(150)]
    activity_record(tenant=alpha.tenant, kind="ingest", agent="wire's \\ agent", generated=generated)
    replicate_tenant(schema=alpha.slug)
    lag = replica_lag(schema=alpha.slug)
    assert lag["pending"] == 0 and lag["dead"] == 0
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    with _session() as session:
        got = {r["id"]: (r["ref"], r["label"]) for r in session.run(
            "MATCH (n:ProvNode {tenant: $t}) RETURN n.pg_id AS id, n.ref AS ref, n.label AS label", t=alpha.slug)}
    want = {n.pk: (n.ref[:200], n.label[:LABEL_CHARS]) for n in ProvNode.objects.all()}
    assert got == want


def test_a_replica_written_before_node_keys_is_keyed_and_not_doubled(alpha, replica, monkeypatch):
    connection.set_tenant(alpha.tenant)
    activity_record(tenant=alpha.tenant, kind="generate", agent="old", used=[("atom", f"old-{uuid.uuid4().hex}")],
                    generated=[("atom", f"new-{uuid.uuid4().hex}")])
    old_rows = [[n.pk, n.kind] for n in ProvNode.objects.all()]
    with _session() as session:  # what the consumer wrote before: nodes identified by {tenant, pg_id} only
        session.run("UNWIND $rows AS r MERGE (n:ProvNode {tenant: $t, pg_id: r[0]}) SET n.kind = r[1]",
                    rows=old_rows, t=alpha.slug).consume()
    monkeypatch.setattr(replica_module, "_servers", {})  # a consumer process starting against that replica
    OutboxEvent.objects.update(sent_at=None)
    replicate_tenant(schema=alpha.slug)
    assert replica_counts(schema=alpha.slug) == _pg_counts(alpha.tenant)
    with _session() as session:
        row = session.run("MATCH (n:ProvNode {tenant: $t}) RETURN count(n) AS c, count(DISTINCT n.pg_id) AS d, "
                          "sum(CASE WHEN n.key IS NULL THEN 1 ELSE 0 END) AS unkeyed", t=alpha.slug).single()
    assert row["c"] == row["d"] == len(old_rows) and row["unkeyed"] == 0
