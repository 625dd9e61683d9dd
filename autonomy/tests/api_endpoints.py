import uuid

from tests.api_matrix import Endpoint


def _in_schema(owner, fn):
    from django.db import connection

    connection.set_tenant(owner.tenant)
    try:
        return fn()
    finally:
        connection.set_schema_to_public()


def _make_run(owner):
    from autonomy.models import ImprovementRun

    return _in_schema(owner, lambda: {"id": ImprovementRun.objects.create(state="done", phase="done").pk})


def _make_approval(owner):
    from datetime import timedelta

    from django.utils import timezone

    from autonomy.models import Approval, CandidateAction, ImprovementRun

    def make():
        run = ImprovementRun.objects.create(state="done", phase="done")
        action = CandidateAction.objects.create(run=run, executor="query", params={"sql": "SELECT 1"},
                                               idempotency_key=f"matrix-{uuid.uuid4().hex}", state="awaiting_approval")
        approval = Approval.objects.create(action=action, expires_at=timezone.now() + timedelta(hours=1))
        return {"id": approval.pk}

    return _in_schema(owner, make)


def _ids(body):
    return [row["id"] for row in body["results"]]


ENDPOINTS = [
    Endpoint("autonomy-trigger", "post", "/api/admin/autonomous/trigger", "admin",
             body=lambda o: {"dry_run": True},
             invalid_bodies=[{"dry_run": "maybe"}, {"actions": "all"}, {"actions": [1]},
                             {"actions": [{"executor": 5}]}, {"actions": [{"executor": "query", "params": []}]},
                             {"actions": [{"executor": "query", "expected_gain": 9}]},
                             {"actions": [{"executor": "query"}] * 51}],
             ok_status=202),
    Endpoint("autonomy-runs", "get", "/api/admin/autonomous/runs", "admin", make=_make_run, list_ids=_ids),
    Endpoint("autonomy-run", "get", "/api/admin/autonomous/runs/{id}", "admin", make=_make_run),
    Endpoint("autonomy-approvals", "get", "/api/admin/autonomous/approvals", "admin", make=_make_approval,
             list_ids=_ids),
    Endpoint("autonomy-approval", "post", "/api/admin/autonomous/approvals/{id}", "admin", make=_make_approval,
             body=lambda o: {"decision": "reject", "note": "matrix"},
             invalid_bodies=[{}, {"decision": "maybe"}, {"decision": ["approve"]},
                             {"decision": "approve", "note": "n" * 1001}]),
]
