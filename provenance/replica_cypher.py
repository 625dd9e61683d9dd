"""What the replica consumer sends over Bolt: the schema, the MERGE statements and how a batch is cut.

Keys. Each node is found by ONE indexed string property, `key` = "<tenant>:<pg_id>" (a uniqueness
constraint on Neo4j 5, a range index on FalkorDB); `tenant` and `pg_id` stay as properties for the
queries. Matching on the pair {tenant, pg_id} instead made FalkorDB intersect two index ranges for
every MERGE: 41-70 us per edge on the server against 11 us with the single key (profile in
docs/benchmarks_provenance.md). Edges are MERGEd between their two nodes by {tenant, pg_id} and type.

Statements. The Cypher text is fixed (a handful of statements, planned once and cached by both
servers); only `$rows` and `$tenant` change. A batch is one transaction holding one statement per
kind of row (nodes, each edge type) when the server takes parameters as they are (Neo4j). FalkorDB's
Bolt layer instead renders the parameters as Cypher text into a buffer of about 4 KB (a larger one
kills the server; the statement's own text counts too), without escaping quotes or backslashes: for
such a server (found by a probe, see `replica.py`) rows are cut into statements whose text stays under
TEXT_LIMIT characters, and strings are escaped the way that renderer reads them back.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from .models import EdgeType

LABEL_CHARS = 120
REF_CHARS = 200
TEXT_LIMIT = 4000  # characters of a statement once rendered as text: its Cypher + its parameters (crash: ~4,090)
TEXT_OVERHEAD = 24  # "CYPHER rows= tenant='' " around the rows and the tenant
EDGE_TYPES = frozenset(EdgeType.values)

# the statements both Neo4j (5.x) and FalkorDB accept; each may fail where it exists already or where
# the server lacks it (FalkorDB has no CREATE CONSTRAINT, Neo4j has the constraint's index already)
SCHEMA = (
    # replicas written before `key` existed: key their nodes once (nothing matches afterwards)
    "MATCH (n:ProvNode) WHERE n.key IS NULL AND n.pg_id IS NOT NULL SET n.key = n.tenant + ':' + toString(n.pg_id)",
    "CREATE CONSTRAINT prov_node_key IF NOT EXISTS FOR (n:ProvNode) REQUIRE n.key IS UNIQUE",
    "CREATE INDEX FOR (n:ProvNode) ON (n.key)",
    "CREATE INDEX FOR (n:ProvNode) ON (n.tenant)",
)

# compact on purpose: on FalkorDB the statement's text counts against the same ~4 KB as its rows
NODE_CYPHER = ("UNWIND $rows AS r MERGE (n:ProvNode {key:$tenant+':'+toString(r[0])}) "
               "SET n.tenant=$tenant,n.pg_id=r[0],n.kind=r[1],n.ref=r[2],n.label=r[3],n.created_at=r[4],"
               "n.retracted_at=r[5],n.flagged_at=r[6]")
EDGE_CYPHER = ("UNWIND $rows AS r WITH r,$tenant+':' AS k "
               "MERGE (a:ProvNode {key:k+toString(r[1])}) ON CREATE SET a.tenant=$tenant,a.pg_id=r[1] "
               "MERGE (b:ProvNode {key:k+toString(r[2])}) ON CREATE SET b.tenant=$tenant,b.pg_id=r[2] "
               "MERGE (a)-[e:EDGE_TYPE {tenant:$tenant,pg_id:r[0]}]->(b) "
               "SET e.weight=r[3],e.valid_from=r[4],e.valid_to=r[5]")
EDGE_CYPHERS = {t: EDGE_CYPHER.replace("EDGE_TYPE", t) for t in EDGE_TYPES}


def node_key(tenant: str, pg_id: int) -> str:
    return f"{tenant}:{pg_id}"


def _epoch(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def rows_from_payloads(payloads, *, escape: bool = False) -> tuple[list[list], dict[str, list[list]]]:
    """Node rows and edge rows per type; the last event for an id wins (a later update).
    `escape`: strings escaped for a server that renders parameters as text (FalkorDB)."""
    nodes: dict[int, list] = {}
    edges: dict[int, tuple[str, list]] = {}
    for p in payloads:
        op = p.get("op")
        if op == "node":
            ref, label = p["ref"][:REF_CHARS], (p.get("label") or "")[:LABEL_CHARS]
            if escape:
                ref, label = text_escape(ref), text_escape(label)
            nodes[p["id"]] = _trim([p["id"], p["kind"], ref, label, _epoch(p.get("created_at")),
                                    _epoch(p.get("retracted_at")), _epoch(p.get("flagged_at"))])
        elif op == "edge":
            if p["type"] not in EDGE_TYPES:
                raise ValueError(f"unknown edge type {p['type']!r}")
            edges[p["id"]] = (p["type"], _trim([p["id"], p["source"], p["target"], float(p["weight"]),
                                                _epoch(p.get("valid_from")), _epoch(p.get("valid_to"))]))
        else:
            raise ValueError(f"unknown outbox op {op!r}")
    by_type: dict[str, list[list]] = defaultdict(list)
    for edge_type, row in edges.values():
        by_type[edge_type].append(row)
    return list(nodes.values()), by_type


def _trim(row: list) -> list:
    """Trailing nulls left out (r[i] past the end is null in both servers): shorter statements."""
    while row[-1] is None:
        row.pop()
    return row


def text_escape(value: str) -> str:
    """What FalkorDB's parameter renderer reads back as `value` (it puts strings in '...' unescaped)."""
    if "\\" in value or "'" in value:
        return value.replace("\\", "\\\\").replace("'", "\\'")
    return value


def text_chars(value) -> int:
    """Characters a parameter value takes once rendered as Cypher text (floats as C's %f, UTF-8 bytes);
    a little more than that for lists (", " between items counted after the last one too)."""
    kind = type(value)
    if kind is list or kind is tuple:
        n = 2
        for v in value:  # rows are flat: the common types inline, the rest recursively
            t = type(v)
            if t is int:
                n += len(str(v)) + 2
            elif t is float:
                n += len(f"{v:f}") + 2
            elif t is str:
                n += len(v.encode()) + 4
            else:
                n += text_chars(v) + 2
        return n
    if value is None:
        return 4
    if kind is float:
        return len(f"{value:f}")
    if kind is str:
        return len(value.encode()) + 2
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 2 + text_chars(v) + 2 for k, v in value.items())
    return len(str(value)) + 2


def chunks(rows: list[list], limit: int | None):
    """Rows cut so that each chunk rendered as text stays under `limit` characters (None: one chunk)."""
    if limit is None:
        if rows:
            yield rows
        return
    chunk, size = [], 2
    for row in rows:
        n = text_chars(row) + 2
        if n + 2 > limit:
            raise ValueError(f"one row renders to {n} characters, over the statement limit {limit}")
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 2
        chunk.append(row)
        size += n
    if chunk:
        yield chunk


def statements(tenant: str, nodes: list[list], edges: dict[str, list[list]], limit: int | None):
    """(cypher, rows) pairs for one transaction: nodes first, then edges by type. `limit`: characters of
    each whole statement once rendered as text (None: no limit)."""
    def room(cypher: str) -> int | None:
        return None if limit is None else limit - len(cypher) - len(tenant) - TEXT_OVERHEAD

    for chunk in chunks(nodes, room(NODE_CYPHER)):
        yield NODE_CYPHER, chunk
    for edge_type in sorted(edges):
        cypher = EDGE_CYPHERS[edge_type]
        for chunk in chunks(edges[edge_type], room(cypher)):
            yield cypher, chunk
