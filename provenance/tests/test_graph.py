"""The provenance graph in PostgreSQL: services, hooks, selectors, ledger chain, tenant isolation."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from hartonomous.errors import Conflict, NotFound, ValidationFailed
from provenance.models import EdgeType, LedgerRecord, OutboxEvent, ProvEdge, ProvNode, Retraction
from provenance.selectors import check_as_of, impact, lineage, shortest_path
from provenance.services import activity_record, atom_retract, chain_digest, node_get

pytestmark = pytest.mark.django_db


def _ingest(tenant, text, capture):
    from atoms.extract import Source
    from atoms.services import atom_ingest

    with capture(execute=True):
        return atom_ingest(tenant=tenant, source=Source.from_bytes(text.encode(), "t.txt"))


def _chain(tenant, n):
    """a0 <- a1 <- ... <- an (each derived from the previous by a 'generate' activity)."""
    refs = [f"c{uuid.uuid4().hex[:8]}-{i}" for i in range(n + 1)]
    for prev, cur in zip(refs, refs[1:], strict=False):
        activity_record(tenant=tenant, kind="generate", agent="tester", used=[("atom", prev)],
                        generated=[("atom", cur)], derived=[(("atom", cur), ("atom", prev), 0.5)])
    return [ProvNode.objects.get(kind="atom", ref=r) for r in refs]


def test_it_records_an_activity_with_prov_edges_ledger_and_outbox(alpha):
    connection.set_tenant(alpha.tenant)
    before_ledger, before_outbox = LedgerRecord.objects.count(), OutboxEvent.objects.count()
    act = activity_record(tenant=alpha.tenant, kind="generate", agent="key:abc", used=["atom:u1"],
                          generated=["atom:g1"], derived=[("atom:g1", "atom:u1")], attributes={"k": 1})
    types = set(ProvEdge.objects.filter(source=act).values_list("type", flat=True))
    assert types == {EdgeType.USED, EdgeType.WAS_ASSOCIATED_WITH}
    g1 = ProvNode.objects.get(kind="atom", ref="g1")
    assert set(ProvEdge.objects.filter(source=g1).values_list("type", flat=True)) == {
        EdgeType.WAS_GENERATED_BY, EdgeType.WAS_ATTRIBUTED_TO, EdgeType.WAS_DERIVED_FROM}
    assert LedgerRecord.objects.count() == before_ledger + 1
    # 4 nodes (activity, agent, u1, g1) + 5 edges, one outbox row each
    assert OutboxEvent.objects.count() == before_outbox + 9
    assert ProvNode.objects.get(kind="activity", ref=act.ref).history.count() >= 1


def test_it_rejects_unknown_activity_kinds_and_nodes(alpha):
    connection.set_tenant(alpha.tenant)
    with pytest.raises(ValidationFailed):
        activity_record(tenant=alpha.tenant, kind="dance", agent="x")
    with pytest.raises(ValidationFailed):
        activity_record(tenant=alpha.tenant, kind="act", agent="x", used=["planet:1"])
    with pytest.raises(NotFound):
        node_get(key="atom:does-not-exist")
    with pytest.raises(NotFound):
        node_get(key="99999999999999999999999")


def test_it_hash_chains_the_ledger(alpha):
    connection.set_tenant(alpha.tenant)
    _chain(alpha.tenant, 3)
    records = list(LedgerRecord.objects.order_by("seq"))
    prev = "0" * 64
    for record in records:
        assert record.prev_digest == prev
        assert record.digest == chain_digest(prev, record.payload)
        prev = record.digest


def test_it_records_ingests_from_the_atom_store_signal(alpha, django_capture_on_commit_callbacks):
    connection.set_tenant(alpha.tenant)
    result = _ingest(alpha.tenant, f"first paragraph {uuid.uuid4().hex}\n\nsecond paragraph here.",
                     django_capture_on_commit_callbacks)
    root = ProvNode.objects.get(kind="atom", ref=str(result.root.pk))
    up = lineage(node=root, depth=2, direction="upstream")
    kinds = {(n.kind, n.ref) for n in up.nodes}
    assert ("agent", "ingest") in kinds
    assert any(k == "activity" for k, _ in kinds)
    parts = [i for i in result.new_ids if i != result.root.pk]
    down = lineage(node=root, depth=1, direction="downstream")
    assert {str(p) for p in parts} <= {n.ref for n in down.nodes if n.kind == "atom"}


def test_it_records_atom_deletion(alpha, django_capture_on_commit_callbacks):
    from atoms.services import atom_delete

    connection.set_tenant(alpha.tenant)
    result = _ingest(alpha.tenant, f"to delete {uuid.uuid4().hex}", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        atom_delete(atom=result.root)
    node = ProvNode.objects.get(kind="atom", ref=str(result.root.pk))
    users = ProvNode.objects.filter(out_edges__target=node, out_edges__type="used", kind="activity")
    assert any(u.label == "delete" for u in users)


def test_it_walks_lineage_to_a_depth_both_ways(alpha):
    connection.set_tenant(alpha.tenant)
    chain = _chain(alpha.tenant, 4)
    up = lineage(node=chain[-1], depth=2, direction="upstream")
    atoms = {n.pk for n in up.nodes if n.kind == "atom"}
    assert atoms == {chain[-1].pk, chain[-2].pk, chain[-3].pk}
    assert up.depths[chain[-3].pk] == 2
    down = lineage(node=chain[0], depth=10, direction="downstream")
    assert {c.pk for c in chain} <= {n.pk for n in down.nodes}
    assert all(e.source_id in {n.pk for n in down.nodes} for e in down.edges)
    with pytest.raises(ValidationFailed):
        lineage(node=chain[0], depth=0)
    with pytest.raises(ValidationFailed):
        lineage(node=chain[0], depth=11)
    with pytest.raises(ValidationFailed):
        lineage(node=chain[0], direction="sideways")


def test_it_survives_cycles(alpha):
    connection.set_tenant(alpha.tenant)
    activity_record(tenant=alpha.tenant, kind="act", agent="loop", derived=[("atom:cy-a", "atom:cy-b"),
                                                                            ("atom:cy-b", "atom:cy-c"),
                                                                            ("atom:cy-c", "atom:cy-a")])
    a = ProvNode.objects.get(kind="atom", ref="cy-a")
    result = lineage(node=a, depth=10, direction="both")
    assert {"cy-a", "cy-b", "cy-c"} <= {n.ref for n in result.nodes}
    assert {d.node.ref for d in impact(node=a).dependants} >= {"cy-b", "cy-c"}


def test_it_finds_the_shortest_path(alpha):
    connection.set_tenant(alpha.tenant)
    chain = _chain(alpha.tenant, 3)
    path = shortest_path(source=chain[3], target=chain[0])
    assert path[0] == chain[3] and path[-1] == chain[0]
    assert len(path) == 4  # derived-from edges are the short cut
    lonely = ProvNode.objects.create(kind="atom", ref=f"lonely-{uuid.uuid4().hex}")
    assert shortest_path(source=chain[0], target=lonely) is None


def test_it_computes_impact_with_attribution_mass(alpha):
    connection.set_tenant(alpha.tenant)
    chain = _chain(alpha.tenant, 3)
    report = impact(node=chain[0])
    by_ref = {d.node.ref: d for d in report.dependants}
    assert set(by_ref) >= {c.ref for c in chain[1:]}
    assert by_ref[chain[1].ref].mass == pytest.approx(1.0)  # wasGeneratedBy/used path has weight 1
    assert all(d.node.kind in ("atom", "run", "step", "model") for d in report.dependants)
    assert report.total_mass > 0


def test_it_answers_as_of_a_past_time(alpha):
    connection.set_tenant(alpha.tenant)
    chain = _chain(alpha.tenant, 1)
    middle = timezone.now()
    activity_record(tenant=alpha.tenant, kind="generate", agent="tester", used=[chain[1]],
                    generated=["atom:later-" + chain[1].ref], derived=[("atom:later-" + chain[1].ref, chain[1])])
    later = ProvNode.objects.get(kind="atom", ref="later-" + chain[1].ref)
    now_refs = {n.ref for n in lineage(node=chain[1], depth=3, direction="downstream").nodes}
    then_refs = {n.ref for n in lineage(node=chain[1], depth=3, direction="downstream", as_of=middle).nodes}
    assert later.ref in now_refs and later.ref not in then_refs
    assert later.ref not in {d.node.ref for d in impact(node=chain[1], as_of=middle).dependants}
    with pytest.raises(NotFound):
        lineage(node=later, as_of=middle)
    with pytest.raises(ValidationFailed):
        check_as_of(tenant=alpha.tenant, as_of=alpha.tenant.created_at - timedelta(days=1))


def test_it_retracts_once_and_flags_dependants(alpha, django_capture_on_commit_callbacks):
    connection.set_tenant(alpha.tenant)
    result = _ingest(alpha.tenant, f"retract me {uuid.uuid4().hex}", django_capture_on_commit_callbacks)
    root = ProvNode.objects.get(kind="atom", ref=str(result.root.pk))
    activity_record(tenant=alpha.tenant, kind="generate", agent="tester", used=[root],
                    generated=["atom:child-" + root.ref], derived=[("atom:child-" + root.ref, root)])
    retraction = atom_retract(tenant=alpha.tenant, atom=result.root, reason="wrong")
    child = ProvNode.objects.get(kind="atom", ref="child-" + root.ref)
    assert child.flagged_at is not None
    assert child.pk in [d["node"] for d in retraction.dependants]
    root.refresh_from_db()
    assert root.retracted_at is not None and root.history.count() >= 2
    with pytest.raises(Conflict):
        atom_retract(tenant=alpha.tenant, atom=result.root)
    assert Retraction.objects.filter(node=root).count() == 1


def test_it_keeps_tenants_apart(alpha, beta):
    connection.set_tenant(alpha.tenant)
    chain = _chain(alpha.tenant, 2)
    connection.set_tenant(beta.tenant)
    assert not ProvNode.objects.filter(kind="atom", ref=chain[0].ref).exists()
    with pytest.raises(NotFound):
        node_get(key=f"atom:{chain[0].ref}")
    beta_node = ProvNode.objects.create(kind="atom", ref=chain[0].ref)
    assert [n.pk for n in lineage(node=beta_node, depth=5, direction="both").nodes] == [beta_node.pk]


def test_it_records_a_large_bulk_ingest_through_its_task(alpha):
    from atoms.bulk import atom_ingest_texts
    from provenance.receivers import INLINE_LIMIT
    from provenance.tasks import record_ingest_task

    connection.set_tenant(alpha.tenant)
    tag = uuid.uuid4().hex
    ids = atom_ingest_texts(tenant=alpha.tenant, texts=[f"bulk {i} {tag}" for i in range(INLINE_LIMIT + 50)]).new_ids
    assert record_ingest_task.apply(args=(alpha.slug, None, ids, "stream", "bench")).get() == len(ids)
    connection.set_tenant(alpha.tenant)
    assert ProvNode.objects.filter(kind="atom", ref__in=[str(i) for i in ids]).count() == len(ids)
