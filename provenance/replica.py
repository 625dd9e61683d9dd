"""The graph replica: the outbox consumer that copies each tenant's graph changes to Neo4j over Bolt.

Production: set NEO4J_URI (bolt://host:7687 or neo4j+s://...), NEO4J_USER, NEO4J_PASSWORD (or
NEO4J_PASSWORD_FILE) and optionally HARTONOMOUS_NEO4J_DATABASE. Unset NEO4J_URI disables replication
(the outbox keeps filling and the lag says so). Tests and the benchmarks use FalkorDB's Bolt server.
PROVENANCE_REPLICA_STATEMENT_CHARS caps a statement's rendered size (default: 4,000 on a server that
renders parameters as text, none on Neo4j). The first start against a replica written before node keys
existed keys its nodes in one pass (replica_cypher.SCHEMA).

Guarantees: events are sent in outbox order per tenant (a session advisory lock keeps one consumer per
tenant), up to 500 per Neo4j transaction, one transaction after the other; every write is a MERGE keyed
by the tenant and the PostgreSQL id (nodes: `key` = "<tenant>:<pg_id>", edges: {tenant, pg_id} between
their nodes), so replaying a batch changes nothing; the PostgreSQL rows are marked sent only after the
Neo4j commit, so a crash between the two replays the batch. A replica that cannot be reached raises
ReplicaUnavailable (the task retries with exponential backoff; nothing is dead-lettered for it). A batch
the replica rejects is retried event by event; an event rejected MAX_ATTEMPTS times goes to the
dead-letter table. Tenants are independent: `replicate_all_task` fans out one task per tenant, so
Celery's worker processes drain several tenants in parallel, each in order.

Cypher is limited to what Neo4j and FalkorDB both accept (MERGE, UNWIND $rows, list indexing, SET); the
statements, the node key and how a batch is cut into statements are in `replica_cypher.py`. At the first
use per process and URI the consumer creates the key constraint/indexes and probes whether the server
renders parameters as text (FalkorDB): then statements stay under its ~4 KB limit and strings are escaped.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import DatabaseError, connection
from django.utils import timezone
from django_tenants.utils import schema_context

from hartonomous.env import env_str

from .models import DeadLetter, OutboxEvent
from .replica_cypher import SCHEMA, TEXT_LIMIT, node_key, rows_from_payloads, statements

BATCH = 500
MAX_ATTEMPTS = 5
_drivers: dict[str, object] = {}
_lock = threading.Lock()
_servers: dict[str, dict] = {}  # per URI: {"text_params": bool}


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


def replica_ensure_schema() -> dict:
    """The key constraint/indexes (created once per process and URI) and what the server is like."""
    uri = replica_uri()
    if uri in _servers:
        return _servers[uri]
    for statement in SCHEMA:
        with _session() as session:
            try:
                session.run(statement).consume()
            except Exception as exc:  # exists already, or not this server's syntax (see replica_cypher.SCHEMA)
                if _is_unavailable(exc):
                    raise ReplicaUnavailable(str(exc)) from exc
    probe = "a" + "\\" * 2  # two backslashes: a server that renders parameters as Cypher text returns one
    try:
        with _session() as session:
            text_params = session.run("RETURN $p AS v", p=probe).single()["v"] != probe
    except Exception as exc:  # not the events' fault: never a dead letter, the task retries
        raise ReplicaUnavailable(f"replica probe failed: {exc}") from exc
    _servers[uri] = {"text_params": text_params}
    return _servers[uri]


def statement_limit(server: dict) -> int | None:
    """Characters of a statement once rendered as text, Cypher and parameters (None: no limit, the whole
    batch in one statement per row kind). PROVENANCE_REPLICA_STATEMENT_CHARS overrides (0: no limit)."""
    configured = env_str("PROVENANCE_REPLICA_STATEMENT_CHARS", "") or ""
    if configured:
        return int(configured) or None
    return TEXT_LIMIT if server["text_params"] else None


def _session():
    database = env_str("NEO4J_DATABASE", "") or None
    return driver().session(database=database) if database else driver().session()


def _write(tx, tenant: str, stmts: list[tuple[str, list]]) -> None:
    for cypher, rows in stmts:
        tx.run(cypher, rows=rows, tenant=tenant).consume()


def _is_unavailable(exc: Exception) -> bool:
    from neo4j.exceptions import ServiceUnavailable, SessionExpired

    return isinstance(exc, (ServiceUnavailable, SessionExpired, ConnectionError, OSError, ReplicaUnavailable))


def send(tenant: str, payloads: list[dict]) -> None:
    """Apply the events (their payloads, in order) to the replica in one Neo4j transaction."""
    try:
        server = replica_ensure_schema()
        nodes, edges = rows_from_payloads(payloads, escape=server["text_params"])
        stmts = list(statements(tenant, nodes, edges, statement_limit(server)))
        with _session() as session:
            session.execute_write(_write, tenant, stmts)
    except Exception as exc:
        if _is_unavailable(exc):
            raise ReplicaUnavailable(str(exc) or type(exc).__name__) from exc
        raise


def _isolate(tenant: str, events: list[OutboxEvent]) -> list[int]:
    """After a rejected batch: send the events one by one, counting attempts; returns the ids sent."""
    sent = []
    for event in events:
        try:
            send(tenant, [event.payload])
            sent.append(event.pk)
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


def _mark_sent(ids: list[int]) -> None:
    if ids:
        with connection.cursor() as cursor:  # one array parameter, not 500 placeholders
            cursor.execute(f"UPDATE {OutboxEvent._meta.db_table} SET sent_at = %s WHERE id = ANY(%s)",
                           [timezone.now(), ids])


def _fetch(after: int, batch: int) -> list[tuple[int, dict]]:
    return list(OutboxEvent.objects.filter(sent_at__isnull=True, dead=False, pk__gt=after).order_by("id")
                .values_list("id", "payload")[:batch])


def _advisory(schema: str, fn: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {fn}(hashtext('provenance.outbox:' || %s))", [schema])
        return cursor.fetchone()[0]


def replicate_tenant(*, schema: str, max_batches: int | None = None, batch: int = BATCH) -> int:
    """Send this tenant's outbox in order, `batch` events a replica transaction; returns how many were
    marked sent. A session advisory lock keeps one consumer per tenant for the whole drain."""
    with schema_context(schema):
        if not _advisory(schema, "pg_try_advisory_lock"):
            return 0  # another consumer holds this tenant
        try:
            return _drain(schema, max_batches, batch)
        finally:
            try:
                _advisory(schema, "pg_advisory_unlock")
            except DatabaseError:  # e.g. a caller's aborted transaction: a closed session drops its locks
                connection.connection.close()


def replicate_batch(*, schema: str, batch: int = BATCH) -> int:
    """Send the next batch of this tenant's outbox; returns how many events were marked sent."""
    return replicate_tenant(schema=schema, max_batches=1, batch=batch)


def _payloads(rows: list[tuple[int, dict]]) -> list[dict]:
    return [payload for _pk, payload in rows]


def _drain(schema: str, max_batches: int | None, batch: int) -> int:
    """Batches go out one after the other, in order, while PostgreSQL work overlaps the replica's: the
    next batch is read while one is being sent, and a batch is marked sent (only once the replica has
    committed it) while the next one is being sent."""
    total, batches = 0, 0
    rows = _fetch(0, batch)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica-send") as pool:
        future = pool.submit(send, schema, _payloads(rows)) if rows else None
        while future is not None:
            batches += 1
            more = max_batches is None or batches < max_batches
            following = _fetch(rows[-1][0], batch) if more else []
            ids = [pk for pk, _payload in rows]
            try:
                future.result()
            except ReplicaUnavailable:
                raise
            except Exception:
                sent = _isolate(schema, list(OutboxEvent.objects.filter(pk__in=ids).order_by("id")))
                _mark_sent(sent)
                total, ids = total + len(sent), []
                # what failed (or follows a dead letter) goes first next time; nothing sent: stop here
                following = _fetch(0, batch) if sent and more else []
            future = pool.submit(send, schema, _payloads(following)) if following else None
            _mark_sent(ids)
            total += len(ids)
            rows = following
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
    cypher = (f"MATCH (n:ProvNode {{key: $key}})-[*1..{depth}]->(m:ProvNode) "
              "WHERE m.tenant = $t RETURN DISTINCT m.pg_id AS id")
    with _session() as session:
        return {row["id"] for row in session.run(cypher, t=schema, key=node_key(schema, int(node_id)))}


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
