"""Reads of the provenance graph: lineage (recursive CTE), shortest path, impact, all `as_of` a time.

Direction: upstream follows edges source -> target (towards what a node came from), downstream
follows them target -> source (towards what depends on it). See models.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db import connection
from django.utils import timezone

from hartonomous.errors import NotFound, ValidationFailed

from .models import ProvEdge, ProvNode

MAX_DEPTH = 10
IMPACT_MAX_DEPTH = 32
DIRECTIONS = ("upstream", "downstream", "both")
DEPENDANT_KINDS = ("atom", "run", "step", "model")


class EdgeRow(NamedTuple):
    """An edge as read by lineage (a tuple: thousands per query cost little to build)."""
    id: int
    source_id: int
    target_id: int
    type: str
    weight: float
    valid_from: datetime
    valid_to: datetime | None

    @property
    def pk(self) -> int:
        return self.id


class NodeRow(NamedTuple):
    """A node as read by lineage (a tuple: a thousand of them cost a fraction of model instances)."""
    id: int
    kind: str
    ref: str
    label: str
    created_at: datetime
    retracted_at: datetime | None
    flagged_at: datetime | None

    @property
    def pk(self) -> int:
        return self.id

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.ref}"


@dataclass
class Lineage:
    root: ProvNode
    nodes: list[NodeRow]
    edges: list[EdgeRow]
    depths: dict[int, int]  # node id -> depth at which it was first reached


@dataclass
class Dependant:
    node: ProvNode
    depth: int
    mass: float


@dataclass
class Impact:
    root: ProvNode
    dependants: list[Dependant] = field(default_factory=list)

    @property
    def total_mass(self) -> float:
        return sum(d.mass for d in self.dependants)


def _tables() -> tuple[str, str]:
    return ProvNode._meta.db_table, ProvEdge._meta.db_table


def check_as_of(*, tenant, as_of: datetime | None) -> datetime | None:
    if as_of is None:
        return None
    if as_of > timezone.now():
        raise ValidationFailed("as_of is in the future.", details={"as_of": as_of.isoformat()})
    created = getattr(tenant, "created_at", None)
    if created is not None and as_of < created:
        raise ValidationFailed("as_of is before the tenant existed.",
                               details={"as_of": as_of.isoformat(), "tenant_created_at": created.isoformat()})
    return as_of


def check_depth(depth: int, maximum: int = MAX_DEPTH) -> int:
    if not isinstance(depth, int) or depth < 1 or depth > maximum:
        raise ValidationFailed(f"depth must be between 1 and {maximum}.", details={"depth": depth})
    return depth


_NEXT = {
    "upstream": "SELECT e.target_id AS n FROM {edges} e WHERE e.source_id = w.node_id",
    "downstream": "SELECT e.source_id AS n FROM {edges} e WHERE e.target_id = w.node_id",
}


def _walk_sql(direction: str) -> str:
    """Breadth-first walk; UNION (not UNION ALL) keeps each (node, depth) once and the depth bound
    stops it, so cycles cannot loop and a node reached by many paths is expanded once per depth."""
    nodes, edges = _tables()
    validity = " AND e.valid_from <= %(at)s AND (e.valid_to IS NULL OR e.valid_to > %(at)s)"
    steps = ["upstream", "downstream"] if direction == "both" else [direction]
    nxt = " UNION ALL ".join(_NEXT[s].format(edges=edges) + validity for s in steps)
    return (f"WITH RECURSIVE walk(node_id, depth) AS (SELECT %(root)s::bigint, 0 UNION "
            f"SELECT x.n, w.depth + 1 FROM walk w CROSS JOIN LATERAL ({nxt}) x WHERE w.depth < %(depth)s) "
            f"SELECT w.node_id, min(w.depth) FROM walk w JOIN {nodes} n ON n.id = w.node_id "
            f"WHERE n.created_at <= %(at)s GROUP BY w.node_id")


def lineage(*, node: ProvNode, depth: int = 3, direction: str = "upstream", as_of: datetime | None = None) -> Lineage:
    """Nodes within `depth` hops of `node` in `direction`, and the edges between them, as of a time."""
    check_depth(depth)
    if direction not in DIRECTIONS:
        raise ValidationFailed("direction must be upstream, downstream or both.", details={"direction": direction})
    at = as_of or timezone.now()
    if node.created_at > at:
        raise NotFound("The node did not exist at as_of.", details={"node": node.key, "as_of": at.isoformat()})
    with connection.cursor() as cursor:
        cursor.execute(_walk_sql(direction), {"root": node.pk, "depth": depth, "at": at})
        depths = dict(cursor.fetchall())
    ids = list(depths)
    node_table, edge_table = _tables()
    with connection.cursor() as cursor:
        # one array parameter (a plan that does not grow with the result), hashed for the semi-joins
        cursor.execute(f"SELECT id, kind, ref, label, created_at, retracted_at, flagged_at FROM {node_table} "
                       "WHERE id = ANY(%s) ORDER BY id", [ids])
        nodes = [NodeRow(*row) for row in cursor.fetchall()]
        cursor.execute(
            f"SELECT e.id, e.source_id, e.target_id, e.type, e.weight, e.valid_from, e.valid_to FROM {edge_table} e "
            "WHERE e.source_id IN (SELECT unnest(%(ids)s::bigint[])) AND e.target_id IN (SELECT unnest(%(ids)s::bigint[])) "
            "AND e.valid_from <= %(at)s AND (e.valid_to IS NULL OR e.valid_to > %(at)s) ORDER BY e.id",
            {"ids": ids, "at": at})
        edges = [EdgeRow(*row) for row in cursor.fetchall()]
    return Lineage(root=node, nodes=nodes, edges=edges, depths=depths)


def _neighbours(frontier: list[int], at: datetime, direction: str) -> list[tuple[int, int, float]]:
    """(from, to, weight) for one BFS level."""
    qs = ProvEdge.objects.filter(valid_from__lte=at).exclude(valid_to__lte=at)
    out = []
    if direction in ("upstream", "both"):
        out += list(qs.filter(source_id__in=frontier).values_list("source_id", "target_id", "weight"))
    if direction in ("downstream", "both"):
        out += [(t, s, w) for s, t, w in qs.filter(target_id__in=frontier).values_list("source_id", "target_id", "weight")]
    return out


def shortest_path(*, source: ProvNode, target: ProvNode, max_depth: int = MAX_DEPTH,
                  as_of: datetime | None = None) -> list[ProvNode] | None:
    """Fewest hops from source to target ignoring edge direction; None when farther than max_depth."""
    check_depth(max_depth)
    at = as_of or timezone.now()
    parent: dict[int, int | None] = {source.pk: None}
    frontier = [source.pk]
    for _ in range(max_depth):
        if target.pk in parent or not frontier:
            break
        nxt = []
        for a, b, _w in _neighbours(frontier, at, "both"):
            if b not in parent:
                parent[b] = a
                nxt.append(b)
        frontier = nxt
    if target.pk not in parent:
        return None
    chain, cur = [], target.pk
    while cur is not None:
        chain.append(cur)
        cur = parent[cur]
    by_id = ProvNode.objects.in_bulk(chain)
    return [by_id[i] for i in reversed(chain)]


def impact(*, node: ProvNode, as_of: datetime | None = None) -> Impact:
    """Everything downstream of `node` that is an atom, run, step or model, with attribution mass:
    the strongest path's product of edge weights (1.0 for an unweighted chain), cycle-safe."""
    at = as_of or timezone.now()
    mass: dict[int, float] = {node.pk: 1.0}
    depth: dict[int, int] = {node.pk: 0}
    level = 0
    frontier = [node.pk]
    while frontier and level < IMPACT_MAX_DEPTH:
        level += 1
        nxt = []
        for a, b, w in _neighbours(frontier, at, "downstream"):
            m = mass[a] * w
            if b not in mass:
                depth[b] = level
                mass[b] = m
                nxt.append(b)
            elif m > mass[b] + 1e-12 and b != node.pk:
                mass[b] = m
                nxt.append(b)  # a stronger path: propagate again (bounded by IMPACT_MAX_DEPTH)
        frontier = list(dict.fromkeys(nxt))
    ids = [i for i in mass if i != node.pk]
    nodes = ProvNode.objects.in_bulk(ids)
    dependants = [Dependant(node=nodes[i], depth=depth[i], mass=round(mass[i], 9))
                  for i in ids if nodes[i].kind in DEPENDANT_KINDS and nodes[i].created_at <= at]
    dependants.sort(key=lambda d: (d.depth, -d.mass, d.node.pk))
    return Impact(root=node, dependants=dependants)


def generations_for_atom(*, atom_id: int, steps_per_run: int = 50) -> list[dict]:
    """Retraction impact on the AtomicStream: every run that had the atom in its context, the share of
    the run's source attention it got, and the steps that credited it (position, text, mass)."""
    from .models import GenerationSource, GenerationStep

    out = []
    for src in GenerationSource.objects.filter(atom_id=atom_id).select_related("run").order_by("-run_id"):
        run = src.run
        total = sum(run.sources.values_list("mass_total", flat=True)) or 0.0
        steps = GenerationStep.objects.filter(run=run, attributions__contains=[{"atom": atom_id}]).order_by("position")
        credited = [{"position": s.position, "text": s.text,
                     "mass": next(a["mass"] for a in s.attributions if a["atom"] == atom_id),
                     "top": s.top_atom_id == atom_id} for s in steps[:steps_per_run]]
        out.append({"run": run.pk, "created_at": run.created_at, "status": run.status, "rank": src.rank,
                    "mass_total": src.mass_total, "share": (src.mass_total / total) if total > 0 else 0.0,
                    "top_steps": src.top_steps, "steps_credited": steps.count(), "steps": credited})
    return out
