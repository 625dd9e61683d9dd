"""Every write to the provenance graph. Each change set, in one transaction, writes the nodes and
edges (with history), one hash-chained ledger record and one outbox row per node/edge for the replica.

`activity_record` is the one way other apps record provenance.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import schema_context
from simple_history.utils import bulk_create_with_history

from hartonomous.errors import Conflict, NotFound, ValidationFailed

from .models import (
    GENESIS,
    EdgeType,
    LedgerRecord,
    NodeKind,
    OutboxEvent,
    ProvEdge,
    ProvNode,
    Retraction,
)

NodeSpec = "ProvNode | tuple[str, str] | str"  # a node, (kind, ref) or "kind:ref"
ACTIVITY_KINDS = ("ingest", "embed", "generate", "discover", "act", "delete", "retract")


def canonical(payload) -> bytes:
    """The bytes the ledger hashes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def chain_digest(prev_digest: str, payload) -> str:
    return hashlib.sha256(prev_digest.encode() + canonical(payload)).hexdigest()


def in_tenant(tenant):
    """Run in the tenant's schema (no switch when it is already set)."""
    if tenant is None or getattr(connection, "schema_name", None) == tenant.schema_name:
        return contextlib.nullcontext()
    return schema_context(tenant.schema_name)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def node_payload(node: ProvNode) -> dict:
    return {"op": "node", "id": node.pk, "kind": node.kind, "ref": node.ref, "label": node.label,
            "created_at": _iso(node.created_at), "retracted_at": _iso(node.retracted_at),
            "flagged_at": _iso(node.flagged_at)}


def edge_payload(edge: ProvEdge) -> dict:
    return {"op": "edge", "id": edge.pk, "source": edge.source_id, "target": edge.target_id, "type": edge.type,
            "weight": edge.weight, "valid_from": _iso(edge.valid_from), "valid_to": _iso(edge.valid_to)}


def ledger_append(*, payload: dict) -> LedgerRecord:
    """Append one record to this schema's chain; the advisory lock serialises writers per tenant."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('provenance.ledger:' || current_schema()))")
    last = LedgerRecord.objects.order_by("-seq").only("seq", "digest").first()
    seq, prev = (last.seq + 1, last.digest) if last else (1, GENESIS)
    payload = json.loads(canonical(payload))  # what is stored is exactly what was hashed
    return LedgerRecord.objects.create(seq=seq, payload=payload, prev_digest=prev,
                                       digest=chain_digest(prev, payload))


def _record_changes(*, action: str, nodes: list[ProvNode], edges: list[ProvEdge], attributes: dict | None = None) -> None:
    if not nodes and not edges:
        return
    rows = [node_payload(n) for n in nodes] + [edge_payload(e) for e in edges]
    OutboxEvent.objects.bulk_create([OutboxEvent(payload=row) for row in rows])
    ledger_append(payload={"action": action, "changes": rows, "attributes": attributes or {}})


def _spec(spec) -> tuple[str, str, str]:
    if isinstance(spec, ProvNode):
        return spec.kind, spec.ref, spec.label
    if isinstance(spec, str):
        kind, _, ref = spec.partition(":")
        spec = (kind, ref)
    kind, ref, *rest = spec
    if kind not in NodeKind.values or not str(ref):
        raise ValidationFailed("Not a provenance node.", details={"node": f"{kind}:{ref}"})
    return kind, str(ref), (rest[0] if rest else "")


def _nodes_ensure(specs: Iterable) -> tuple[dict[tuple[str, str], ProvNode], list[ProvNode]]:
    """Fetch or create nodes; returns ({(kind, ref): node}, nodes created now)."""
    wanted: dict[tuple[str, str], str] = {}
    for spec in specs:
        kind, ref, label = _spec(spec)
        wanted.setdefault((kind, ref), label)
    found = {}
    for kind in {k for k, _ in wanted}:
        refs = [r for k, r in wanted if k == kind]
        for node in ProvNode.objects.filter(kind=kind, ref__in=refs):
            found[(node.kind, node.ref)] = node
    missing = [ProvNode(kind=k, ref=r, label=wanted[(k, r)][:300]) for (k, r) in wanted if (k, r) not in found]
    created = bulk_create_with_history(missing, ProvNode, batch_size=1000) if missing else []
    for node in created:
        found[(node.kind, node.ref)] = node
    return found, list(created)


def node_ensure(*, tenant, kind: str, ref: str, label: str = "") -> ProvNode:
    with in_tenant(tenant), transaction.atomic():
        found, created = _nodes_ensure([(kind, ref, label)])
        _record_changes(action="node", nodes=created, edges=[])
        return found[(kind, str(ref))]


def activity_record(*, tenant, kind: str, agent, used: Iterable = (), generated: Iterable = (),
                    derived: Iterable[tuple] = (), informed_by: Iterable = (), attributes: dict | None = None,
                    ref: str | None = None, at: datetime | None = None) -> ProvNode:
    """Record one activity: it `used` inputs, outputs `wasGeneratedBy` it and are `wasAttributedTo` the
    agent, the activity `wasAssociatedWith` the agent (and `wasInformedBy` earlier activities);
    `derived` holds (child, parent) or (child, parent, weight) pairs for `wasDerivedFrom`.

    Nodes are given as ProvNode, (kind, ref) or "kind:ref" (an agent may be a plain name).
    """
    if kind not in ACTIVITY_KINDS:
        raise ValidationFailed("Unknown activity kind.", details={"kind": kind, "allowed": list(ACTIVITY_KINDS)})
    at = at or timezone.now()
    agent_spec = agent
    if isinstance(agent, str) and agent.partition(":")[0] not in NodeKind.values:
        agent_spec = ("agent", agent)  # a plain agent name such as "ingest" or "api_key:ab12"
    used, generated, derived, informed_by = list(used), list(generated), list(derived), list(informed_by)
    activity_spec = ("activity", ref or f"{kind}:{uuid.uuid4().hex}", kind)
    with in_tenant(tenant), transaction.atomic():
        specs = [activity_spec, agent_spec, *used, *generated, *informed_by]
        specs += [s for pair in derived for s in pair[:2]]
        nodes, created = _nodes_ensure(specs)

        def node(spec):
            kind_, ref_, _ = _spec(spec)
            return nodes[(kind_, ref_)]

        act, who = node(activity_spec), node(agent_spec)
        edges = [ProvEdge(source=act, target=who, type=EdgeType.WAS_ASSOCIATED_WITH, valid_from=at)]
        edges += [ProvEdge(source=act, target=node(s), type=EdgeType.USED, valid_from=at) for s in used]
        for s in generated:
            edges.append(ProvEdge(source=node(s), target=act, type=EdgeType.WAS_GENERATED_BY, valid_from=at))
            edges.append(ProvEdge(source=node(s), target=who, type=EdgeType.WAS_ATTRIBUTED_TO, valid_from=at))
        for pair in derived:
            weight = float(pair[2]) if len(pair) > 2 else 1.0
            edges.append(ProvEdge(source=node(pair[0]), target=node(pair[1]), type=EdgeType.WAS_DERIVED_FROM,
                                  weight=weight, valid_from=at))
        edges += [ProvEdge(source=act, target=node(s), type=EdgeType.WAS_INFORMED_BY, valid_from=at)
                  for s in informed_by]
        edges = bulk_create_with_history(edges, ProvEdge, batch_size=1000)
        _record_changes(action=f"activity:{kind}", nodes=created, edges=list(edges), attributes=attributes)
        if attributes:
            act.attributes = attributes
            act.save(update_fields=["attributes"])
        return act


def edge_end(*, tenant, edge: ProvEdge, at: datetime | None = None) -> ProvEdge:
    """Close an edge's validity (it stays for `as_of` queries before `at`)."""
    with in_tenant(tenant), transaction.atomic():
        if edge.valid_to is None:
            edge.valid_to = at or timezone.now()
            edge.save(update_fields=["valid_to"])
            _record_changes(action="edge_end", nodes=[], edges=[edge])
        return edge


def atom_retract(*, tenant, atom, reason: str = "", agent: str = "api") -> Retraction:
    """Mark an atom retracted and flag everything that depends on it (with its attribution mass).

    Retraction is a provenance state: the atom stays readable (for audit and for the impact report);
    hiding it is the separate `DELETE /api/atoms/{id}`.
    """
    from .selectors import impact

    with in_tenant(tenant), transaction.atomic():
        found, created = _nodes_ensure([("atom", str(atom.pk), atom.sha256[:12])])
        node = ProvNode.objects.select_for_update().get(pk=found[("atom", str(atom.pk))].pk)
        if node.retracted_at is not None or Retraction.objects.filter(node=node).exists():
            raise Conflict("The atom is already retracted.", details={"atom": atom.pk, "at": _iso(node.retracted_at)})
        now = timezone.now()
        report = impact(node=node)
        dependants = [{"node": d.node.pk, "kind": d.node.kind, "ref": d.node.ref, "mass": d.mass, "depth": d.depth}
                      for d in report.dependants]
        node.retracted_at = now
        node.save(update_fields=["retracted_at"])
        flagged = list(ProvNode.objects.filter(pk__in=[d["node"] for d in dependants], flagged_at__isnull=True))
        for dep in flagged:
            dep.flagged_at = now
            dep.save(update_fields=["flagged_at"])
        retraction = Retraction.objects.create(node=node, reason=reason, at=now, dependants=dependants)
        _record_changes(action="retract", nodes=[*created, node, *flagged], edges=[],
                        attributes={"atom": atom.pk, "reason": reason, "agent": agent})
        return retraction


def outbox_replay_from(*, tenant, position: int) -> int:
    """Queue every event from `position` on again (the replica MERGEs, so replay changes nothing twice)."""
    from .models import DeadLetter

    with in_tenant(tenant), transaction.atomic():
        DeadLetter.objects.filter(event_id__gte=position, resolved_at__isnull=True).update(resolved_at=timezone.now())
        return OutboxEvent.objects.filter(pk__gte=position).update(sent_at=None, dead=False, attempts=0,
                                                                    last_error="")


def node_get(*, key: str) -> ProvNode:
    """A node by "kind:ref" or by its numeric id; NotFound otherwise."""
    key = (key or "").strip()
    node = None
    if key.isdigit():
        node = ProvNode.objects.filter(pk=int(key)).first() if int(key) < 2**63 else None
    elif ":" in key:
        kind, _, ref = key.partition(":")
        node = ProvNode.objects.filter(kind=kind, ref=ref).first()
    if node is None:
        raise NotFound("No such provenance node.", details={"node": key})
    return node
