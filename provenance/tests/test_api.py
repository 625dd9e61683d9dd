"""The provenance API beyond the generic matrix: shapes, exports, retraction twice, bad input."""
from __future__ import annotations

import uuid

import pytest
from django.db import connection

from provenance.services import activity_record
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db


def _atom(tenant):
    from atoms.extract import Source
    from atoms.services import atom_ingest

    connection.set_tenant(tenant)
    result = atom_ingest(tenant=tenant, source=Source.from_bytes(f"api {uuid.uuid4().hex}".encode(), "a.txt"))
    tag = uuid.uuid4().hex[:8]
    activity_record(tenant=tenant, kind="generate", agent="tester", used=[("atom", str(result.root.pk))],
                    generated=[f"atom:out-{tag}"], derived=[(f"atom:out-{tag}", ("atom", str(result.root.pk)), 0.25)])
    connection.set_schema_to_public()
    return result.root, f"atom:out-{tag}"


def test_it_serves_a_marquez_style_lineage_graph(alpha, api):
    root, out = _atom(alpha.tenant)
    body = api(alpha.keys["read"]).get("/api/lineage", {"node": out, "depth": 2}).json()
    ids = {entry["id"] for entry in body["graph"]}
    assert {out, f"atom:{root.pk}", "agent:tester"} <= ids
    entry = next(e for e in body["graph"] if e["id"] == out)
    assert {"origin": out, "destination": f"atom:{root.pk}"}.items() <= {
        k: v for k, v in next(x for x in entry["outEdges"] if x["type"] == "wasDerivedFrom").items()}.items()


def test_it_exports_prov_json_and_openlineage(alpha, api):
    _root, out = _atom(alpha.tenant)
    prov = api(alpha.keys["read"]).get("/api/lineage/export", {"node": out, "standard": "prov"}).json()
    assert f"hart:{out.replace(':', '/')}" in prov["entity"]
    assert prov["wasDerivedFrom"] and prov["activity"] and prov["agent"]
    ol = api(alpha.keys["read"]).get("/api/lineage/export", {"node": out, "standard": "openlineage"}).json()
    event = ol["events"][0]
    assert event["eventType"] == "COMPLETE" and event["outputs"][0]["name"] == out
    assert event["inputs"] and uuid.UUID(event["run"]["runId"])


def test_it_reports_impact_then_retracts_once(alpha, beta, api):
    root, out = _atom(alpha.tenant)
    client = api(alpha.keys["all"])
    impact = client.get(f"/api/atoms/{root.pk}/impact").json()
    assert out in {d["node"]["id"] for d in impact["dependants"]}
    assert next(d for d in impact["dependants"] if d["node"]["id"] == out)["mass"] == pytest.approx(1.0)
    first = client.post(f"/api/atoms/{root.pk}/retract", {"reason": "bad source"})
    assert first.status_code == 201 and first.json()["flagged"] >= 1
    assert_error_shape(client.post(f"/api/atoms/{root.pk}/retract", {}), 409)
    after = client.get(f"/api/atoms/{root.pk}/impact").json()
    assert after["retracted"] is True
    flagged = client.get("/api/lineage", {"node": out, "depth": 1}).json()
    assert next(e for e in flagged["graph"] if e["id"] == out)["data"]["flagged_at"]
    assert_error_shape(api(beta.keys["all"]).get("/api/lineage", {"node": out}), 404)


def test_it_rejects_unknown_nodes_and_finds_paths(alpha, api):
    root, out = _atom(alpha.tenant)
    client = api(alpha.keys["read"])
    assert_error_shape(client.get("/api/lineage", {"node": "atom:nope-" + uuid.uuid4().hex}), 404)
    assert_error_shape(client.get("/api/lineage", {"node": "9" * 30}), 404)
    assert_error_shape(client.get("/api/atoms/123456789/impact"), 404)
    path = client.get("/api/lineage/path", {"source": out, "target": "agent:tester"}).json()
    assert path["hops"] == 1
