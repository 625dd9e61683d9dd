import pytest
from django.db import connection

from autonomy.models import Approval, ImprovementRun
from autonomy.tests.helpers import drive, set_policy
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db
READ = {"executor": "query", "params": {"sql": "SELECT 1 AS one"}}


def test_it_triggers_a_run_and_shows_its_phases_and_actions(alpha, api):
    response = api(alpha.keys["all"]).post("/api/admin/autonomous/trigger", {"actions": [READ]})
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    assert response.json()["state"] == "running" and response.json()["phase"] == "analyze"
    connection.set_tenant(alpha.tenant)
    drive(alpha.tenant, ImprovementRun.objects.get(pk=run_id))
    connection.set_schema_to_public()
    body = api(alpha.keys["all"]).get(f"/api/admin/autonomous/runs/{run_id}").json()
    assert body["state"] == "done" and [p["phase"] for p in body["phase_log"]] == ["analyze", "hypothesize", "act", "learn"]
    assert any(a["executor"] == "query" and a["state"] == "done" for a in body["actions"])
    assert {s["kind"] for s in body["signals"]} >= {"missing_embeddings", "dead_letters"}
    assert body["budget"]["actions"][0] >= 1


def test_it_approves_through_the_api_and_refuses_a_foreign_approval_id(alpha, beta, api):
    connection.set_tenant(alpha.tenant)
    set_policy(alpha.tenant, approval_risk_threshold=0.0)
    try:
        connection.set_schema_to_public()
        run_id = api(alpha.keys["all"]).post("/api/admin/autonomous/trigger", {"actions": [READ]}).json()["id"]
        connection.set_tenant(alpha.tenant)
        drive(alpha.tenant, ImprovementRun.objects.get(pk=run_id))
        approval = Approval.objects.get(action__run_id=run_id)
        connection.set_schema_to_public()
        pending = api(alpha.keys["all"]).get("/api/admin/autonomous/approvals").json()["results"]
        assert [p["id"] for p in pending] == [approval.pk] and pending[0]["evidence"]["executor"] == "query"
        foreign = api(beta.keys["all"]).post(f"/api/admin/autonomous/approvals/{approval.pk}", {"decision": "approve"})
        assert_error_shape(foreign, 404)
        denied = api(alpha.keys["write"]).post(f"/api/admin/autonomous/approvals/{approval.pk}", {"decision": "approve"})
        assert_error_shape(denied, 403)
        ok = api(alpha.keys["all"]).post(f"/api/admin/autonomous/approvals/{approval.pk}", {"decision": "approve",
                                                                                         "note": "go"})
        assert ok.status_code == 200 and ok.json()["state"] == "approved" and ok.json()["decided_by"]
        again = api(alpha.keys["all"]).post(f"/api/admin/autonomous/approvals/{approval.pk}", {"decision": "reject"})
        assert_error_shape(again, 409)
        connection.set_tenant(alpha.tenant)
        run = drive(alpha.tenant, ImprovementRun.objects.get(pk=run_id))
        assert run.state == "done" and run.actions.get(executor="query").result["rows"] == [[1]]
    finally:
        set_policy(alpha.tenant, approval_risk_threshold=0.5)


def test_it_answers_404_for_an_absurd_id(alpha, api):
    assert_error_shape(api(alpha.keys["all"]).get("/api/admin/autonomous/runs/99999999999999999999"), 404)
    assert_error_shape(api(alpha.keys["all"]).post("/api/admin/autonomous/approvals/9999999999999",
                                                   {"decision": "approve"}), 404)
