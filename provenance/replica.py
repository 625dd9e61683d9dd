"""The graph replica: the outbox consumer that copies each tenant's graph changes to Neo4j over Bolt.

Production: set NEO4J_URI (bolt://host:7687 or neo4j+s://...), NEO4J_USER, NEO4J_PASSWORD (or
NEO4J_PASSWORD_FILE) and optionally HARTONOMOUS_NEO4J_DATABASE. Unset NEO4J_URI disables replication
(the outbox keeps filling and the lag says so). Tests and the benchmarks use FalkorDB's Bolt server.

Guarantees: events are read in outbox order per tenant (an advisory lock keeps one consumer per tenant),
up to 500 per Neo4j transaction; every write is a MERGE keyed by (tenant, pg_id), so replaying a batch
changes nothing; the PostgreSQL rows are marked sent only after the Neo4j commit, so a crash between the
two replays the batch. A replica that cannot be reached raises ReplicaUnavailable (the task retries with
exponential backoff; nothing is dead-lettered for it). A batch the replica rejects is retried event by
event; an event rejected MAX_ATTEMPTS times goes to the dead-letter table.

Cypher is limited to what Neo4j and FalkorDB both accept (MERGE, UNWIND $rows, list indexing, SET).
FalkorDB's Bolt server crashes on messages above ~4 KB, so rows are sent in several statements of at
most ROW_BYTES each, all inside the one transaction.
"""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context

from hartonomous.env import env_str

from .models import DeadLetter, EdgeType, OutboxEvent

BATCH = 500
MAX_ATTEMPTS = 5
ROW_BYTES = 2500
LABEL_CHARS = 120
_drivers: dict[str, object] = {}
_lock = threading.Lock()


class ReplicaUnavailable(RuntimeError):
    pass


def replica_uri() -> str:
    return env_str("NEO4J_URI", "") or ""


def driver():
    """One driver per process and URI, never closed (FalkorDB stalls new connections after GOODBYE)."""
    from neo4j import GraphDatabase

    uri = replica_uri()
    if not uri:
        raise ReplicaUnavailable("NEO4J_URI is not set: replication is disabled.")
    with _lock:
        if uri not in _drivers:
            auth = (env_str("NEO4J_USER", "neo4j") or "neo4j", env_str("NEO4J_PASSWORD", "") or "")
            _drivers[uri] = GraphDatabase.driver(uri, auth=auth, connection_timeout=5.0,
                                                 max_transaction_retry_time=1.0, connection_acquisition_timeout=10.0)
        return _drivers[uri]


_schema_ready: set[str] = set()


def replica_ensure_schema() -> None:
    """The index every MERGE looks up by (created once per process and URI; both servers accept it)."""
    uri = replica_uri()
    if uri in _schema_ready:
        return
    with _session() as session:
        for prop in ("pg_id", "tenant"):
            try:
                session.run(f"CREATE INDEX FOR (n:ProvNode) ON (n.{prop})").consume()
            except Exception as exc:  # already there (FalkorDB says so with an error)
                if _is_unavailable(exc):
                    raise ReplicaUnavailable(str(exc)) from exc
    _schema_ready.add(uri)


def _session():
    database = env_str("NEO4J_DATABASE", "") or None
    return driver().session(database=database) if database else driver().session()


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def _chunks(rows: list[list]):
    chunk, size = [], 0
    for row in rows:
        n = len(json.dumps(row, default=str)) + 4
        if chunk and size + n > ROW_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += n
    if chunk:
        yield chunk


NODE_CYPHER = ("UNWIND $rows AS r MERGE (n:ProvNode {tenant: $tenant, pg_id: r[0]}) "
               "SET n.kind = r[1], n.ref = r[2], n.label = r[3], n.created_at = r[4], n.retracted_at = r[5], "
               "n.flagged_at = r[6]")
EDGE_CYPHER = ("UNWIND $rows AS r MERGE (a:ProvNode {tenant: $tenant, pg_id: r[1]}) "
               "MERGE (b:ProvNode {tenant: $tenant, pg_id: r[2]}) "
               "MERGE (a)-[e:EDGE_TYPE {tenant: $tenant, pg_id: r[0]}]->(b) "
               "SET e.weight = r[3], e.valid_from = r[4], e.valid_to = r[5]")


def _rows(events: list[OutboxEvent]) -> tuple[list[list], dict[str, list[list]]]:
    """Node rows and edge rows per type; the last event for an id wins (a later update)."""
    nodes: dict[int, list] = {}
    edges: dict[int, tuple[str, list]] = {}
    for event in events:
        p = event.payload
        if p.get("op") == "node":
            nodes[p["id"]] = [p["id"], p["kind"], p["ref"][:200], (p.get("label") or "")[:LABEL_CHARS],
                              _epoch(p.get("created_at")), _epoch(p.get("retracted_at")), _epoch(p.get("flagged_at"))]
        elif p.get("op") == "edge":
            if p["type"] not in EdgeType.values:
                raise ValueError(f"unknown edge type {p['type']!r}")
            edges[p["id"]] = (p["type"], [p["id"], p["source"], p["target"], float(p["weight"]),
                                          _epoch(p.get("valid_from")), _epoch(p.get("valid_to"))])
        else:
            raise ValueError(f"unknown outbox op {p.get('op')!r}")
    by_type: dict[str, list[list]] = defaultdict(list)
    for edge_type, row in edges.values():
        by_type[edge_type].append(row)
    return list(nodes.values()), by_type


def _write(tx, tenant: str, nodes: list[list], edges: dict[str, list[list]]) -> None:
    for chunk in _chunks(nodes):
        tx.run(NODE_CYPHER, rows=chunk, tenant=tenant).consume()
    for edge_type, rows in edges.items():
        cypher = EDGE_CYPHER.replace("EDGE_TYPE", edge_type)  # edge_type is one of EdgeType (checked in _rows)
        for chunk in _chunks(rows):
            tx.run(cypher, rows=chunk, tenant=tenant).consume()


def _is_unavailable(exc: Exception) -> bool:
    from neo4j.exceptions import ServiceUnavailable, SessionExpired

    return isinstance(exc, (ServiceUnavailable, SessionExpired, ConnectionError, OSError, ReplicaUnavailable))


def send(tenant: str, events: list[OutboxEvent]) -> None:
    """Apply the events to the replica in one Neo4j transaction."""
    nodes, edges = _rows(events)
    try:
        replica_ensure_schema()
        with _session() as session:
            session.execute_write(_write, tenant, nodes, edges)
    except Exception as exc:
        if _is_unavailable(exc):
            raise ReplicaUnavailable(str(exc) or type(exc).__name__) from exc
        raise


def _isolate(tenant: str, events: list[OutboxEvent]) -> list[OutboxEvent]:
    """After a rejected batch: send the events one by one, counting attempts; returns those sent."""
    sent = []
    for event in events:
        try:
            send(tenant, [event])
            sent.append(event)
        except ReplicaUnavailable:
            raise
        except Exception as exc:
            event.attempts += 1
            event.last_error = (str(exc) or type(exc).__name__)[:2000]
            event.dead = event.attempts >= MAX_ATTEMPTS
            event.save(update_fields=["attempts", "last_error", "dead"])
            if event.dead:
                DeadLetter.objects.update_or_create(event=event, defaults={
                    "payload": event.payload, "error": event.last_error, "attempts": event.attempts,
                    "resolved_at": None})
            break  # keep the order: what follows a failing event waits for its retry or dead letter
    return sent


def replicate_batch(*, schema: str, batch: int = BATCH) -> int:
    """Send the next batch of this tenant's outbox; returns how many events were marked sent."""
    with schema_context(schema), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext('provenance.outbox:' || %s))", [schema])
            if not cursor.fetchone()[0]:
                return 0  # another consumer holds this tenant
        events = list(OutboxEvent.objects.filter(sent_at__isnull=True, dead=False).order_by("id")[:batch])
        if not events:
            return 0
        try:
            send(schema, events)
            sent = events
        except ReplicaUnavailable:
            raise
        except Exception:
            sent = _isolate(schema, events)
        OutboxEvent.objects.filter(pk__in=[e.pk for e in sent]).update(sent_at=timezone.now())
        return len(sent)


def replicate_tenant(*, schema: str, max_batches: int | None = None) -> int:
    total, batches = 0, 0
    while max_batches is None or batches < max_batches:
        n = replicate_batch(schema=schema)
        if n == 0:
            break
        total, batches = total + n, batches + 1
    return total


def tenant_schemas() -> list[str]:
    from django_tenants.utils import get_public_schema_name

    from tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return list(Tenant.objects.exclude(schema_name=get_public_schema_name()).order_by("schema_name")
                    .values_list("schema_name", flat=True))


def replica_lag(*, schema: str) -> dict:
    """Pending and dead events and the age of the oldest pending one (seconds)."""
    with schema_context(schema):
        pending = OutboxEvent.objects.filter(sent_at__isnull=True, dead=False)
        oldest = pending.order_by("id").values_list("created_at", flat=True).first()
        last = OutboxEvent.objects.filter(sent_at__isnull=False).order_by("-id").values_list("pk", flat=True).first()
        return {"pending": pending.count(), "dead": OutboxEvent.objects.filter(dead=True).count(),
                "lag_seconds": round((timezone.now() - oldest).total_seconds(), 3) if oldest else 0.0,
                "position": last or 0}


def replica_health() -> str:
    """For hartonomous/health.py CHECKS: raises when the replica is enabled and far behind or unreachable."""
    lags = {schema: replica_lag(schema=schema) for schema in tenant_schemas()}
    pending = sum(v["pending"] for v in lags.values())
    worst = max((v["lag_seconds"] for v in lags.values()), default=0.0)
    dead = sum(v["dead"] for v in lags.values())
    summary = f"{pending} pending, oldest {worst:.1f} s, {dead} dead"
    if not replica_uri():
        return f"replication disabled (NEO4J_URI unset); {summary}"
    try:
        with _session() as session:
            session.run("RETURN 1").consume()
    except Exception as exc:
        if _is_unavailable(exc):
            raise ReplicaUnavailable(f"replica unreachable: {exc}; {summary}") from exc
        raise
    limit = float(env_str("PROVENANCE_MAX_LAG_SECONDS", "300") or 300)
    if worst > limit:
        raise RuntimeError(f"replica lag {worst:.0f} s over {limit:.0f} s; {summary}")
    return summary


def replica_counts(*, schema: str) -> dict:
    with _session() as session:
        nodes = session.run("MATCH (n:ProvNode {tenant: $t}) RETURN count(n) AS c", t=schema).single()["c"]
        edges = session.run("MATCH (:ProvNode {tenant: $t})-[e]->() WHERE e.tenant = $t RETURN count(e) AS c",
                            t=schema).single()["c"]
    return {"nodes": nodes, "edges": edges}


def replica_lineage(*, schema: str, node_id: int, depth: int) -> set[int]:
    """Node ids upstream of a node in the replica, within this tenant only."""
    from .selectors import check_depth

    depth = check_depth(int(depth))
    cypher = (f"MATCH (n:ProvNode {{tenant: $t, pg_id: $id}})-[*1..{depth}]->(m:ProvNode) "
              "WHERE m.tenant = $t RETURN DISTINCT m.pg_id AS id")
    with _session() as session:
        return {row["id"] for row in session.run(cypher, t=schema, id=node_id)}


def replicate_forever(*, interval: float = 1.0, stop=None) -> None:  # pragma: no cover - the bench's consumer
    while stop is None or not stop():
        moved = 0
        for schema in tenant_schemas():
            try:
                moved += replicate_tenant(schema=schema)
            except ReplicaUnavailable:
                pass
        if not moved:
            time.sleep(interval)
