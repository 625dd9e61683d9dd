import pytest
from django.db import IntegrityError, connection, transaction

from autonomy.models import ActionOutcome, Approval, CandidateAction, ImprovementRun, Phase, Signal
from autonomy.services import approval_decide, approvals_expire, phase_execute, run_create
from autonomy.tests.helpers import drive, set_policy
from hartonomous.errors import Conflict, NotFound, ValidationFailed
from tests.api_matrix import APPS  # noqa: F401  (the matrix knows this app)

pytestmark = pytest.mark.django_db
A, R = CandidateAction.State, ImprovementRun.State
READ = {"executor": "query", "params": {"sql": "SELECT count(*) AS n FROM autonomy_improvementrun"}}


def test_it_runs_analyze_hypothesize_act_learn_and_records_each(alpha):
    connection.set_tenant(alpha.tenant)
    run = run_create(tenant=alpha.tenant, actions=[READ])
    assert run.state == R.RUNNING and run.phase == Phase.ANALYZE
    run = drive(alpha.tenant, run)
    assert run.state == R.DONE and run.phase == Phase.DONE and run.finished_at
    assert [p["phase"] for p in run.phase_log] == ["analyze", "hypothesize", "act", "learn"]
    kinds = set(Signal.objects.filter(run=run).values_list("kind", flat=True))
    assert {"missing_embeddings", "failed_ingests", "rising_costs", "dead_letters", "boredom"} <= kinds
    action = run.actions.get(executor="query")
    assert action.state == A.DONE and action.attempts == 1 and action.result["rows"] == [[1]]
    assert ActionOutcome.objects.filter(action=action).exists()
    assert run.actions_used >= 1


def test_it_keeps_one_active_run_per_tenant_and_queues_the_next(alpha, beta):
    connection.set_tenant(alpha.tenant)
    first = run_create(tenant=alpha.tenant)
    second = run_create(tenant=alpha.tenant)
    assert first.state == R.RUNNING and second.state == R.QUEUED
    with pytest.raises(IntegrityError), transaction.atomic():
        ImprovementRun.objects.filter(pk=second.pk).update(state=R.RUNNING)
    drive(alpha.tenant, first)  # finishing the first promotes the second (on commit)
    from autonomy.services import run_promote

    assert run_promote(tenant=alpha.tenant).pk == second.pk
    connection.set_tenant(beta.tenant)  # another tenant runs in parallel
    assert run_create(tenant=beta.tenant).state == R.RUNNING


def test_it_ignores_a_duplicate_or_late_phase_message(alpha):
    connection.set_tenant(alpha.tenant)
    run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]), until=Phase.ACT)
    assert phase_execute(tenant=alpha.tenant, run_id=run.pk, phase=Phase.ANALYZE) == "skipped"
    assert Signal.objects.filter(run=run).count() == len(set(Signal.objects.filter(run=run).values_list("kind")))


def test_it_never_repeats_an_action_claimed_before_a_crash(alpha):
    connection.set_tenant(alpha.tenant)
    run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]), until=Phase.ACT)
    action = run.actions.get(executor="query")
    CandidateAction.objects.filter(pk=action.pk).update(state=A.RUNNING, attempts=1)  # the worker died here
    run = drive(alpha.tenant, run)
    action.refresh_from_db()
    assert run.state == R.DONE
    assert action.state == A.FAILED and action.attempts == 1 and "interrupted" in action.error


def test_it_stops_a_run_that_would_exceed_its_token_budget(alpha):
    connection.set_tenant(alpha.tenant)
    run = run_create(tenant=alpha.tenant, actions=[{"executor": "reembed", "params": {"limit": 100}}])
    ImprovementRun.objects.filter(pk=run.pk).update(max_tokens=10)
    run = drive(alpha.tenant, run)
    assert run.state == R.STOPPED and run.stop_reason.startswith("budget: tokens")
    assert run.actions.get(executor="reembed").state == A.SKIPPED


def test_it_stops_at_the_action_budget(alpha):
    connection.set_tenant(alpha.tenant)
    run = run_create(tenant=alpha.tenant, actions=[READ, {"executor": "api_call", "params": {"service": "atom_counts"}}])
    ImprovementRun.objects.filter(pk=run.pk).update(actions_used=run.max_actions)
    run = drive(alpha.tenant, run)
    assert run.state == R.STOPPED and "budget: actions" in run.stop_reason
    assert not run.actions.filter(state=A.DONE).exists()


def test_it_waits_for_approval_above_the_risk_threshold_then_runs_when_approved(alpha):
    connection.set_tenant(alpha.tenant)
    set_policy(alpha.tenant, allowed_executors=["query", "shell"], shell_whitelist=["echo"], approval_risk_threshold=0.5)
    try:
        run = run_create(tenant=alpha.tenant, actions=[{"executor": "shell", "params": {"argv": ["echo", "hi"]},
                                                        "risk": 0.0}])
        run = drive(alpha.tenant, run)
        assert run.state == R.WAITING and run.phase == Phase.ACT
        action = run.actions.get(executor="shell")
        approval = Approval.objects.get(action=action)
        assert action.state == A.AWAITING and action.risk >= 0.7 and approval.evidence["executor"] == "shell"
        approval_decide(tenant=alpha.tenant, approval_id=approval.pk, decision="approve", note="ok", actor="test")
        run = drive(alpha.tenant, run)
        action.refresh_from_db()
        assert run.state == R.DONE and action.state == A.DONE and action.result["stdout"] == "hi\n"
        with pytest.raises(Conflict):
            approval_decide(tenant=alpha.tenant, approval_id=approval.pk, decision="reject")
    finally:
        set_policy(alpha.tenant, allowed_executors=["reindex", "recluster", "reembed", "query", "api_call"],
                   shell_whitelist=[])


def test_it_runs_an_action_approved_while_act_was_about_to_wait(alpha):
    """The approval lands after Act read its actions but before it parks the run: the run is still
    running, so the approval wakes nobody; Act must see it and run the action (not skip it to Learn,
    not park the run with nobody to wake it)."""
    import time

    from autonomy.services import _act_finish

    connection.set_tenant(alpha.tenant)
    set_policy(alpha.tenant, approval_risk_threshold=0.0)
    try:
        run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]))
        assert run.state == R.WAITING
        ImprovementRun.objects.filter(pk=run.pk).update(state=R.RUNNING)  # Act has not parked it yet
        approval_decide(tenant=alpha.tenant, approval_id=Approval.objects.get(action__run=run).pk, decision="approve")
        run.refresh_from_db()
        assert run.state == R.RUNNING  # not woken: it was not waiting
        assert _act_finish(run, time.perf_counter(), awaiting=True) is True
        run.refresh_from_db()
        assert run.state == R.RUNNING and run.phase == Phase.ACT
        run = drive(alpha.tenant, run)
        assert run.state == R.DONE and run.actions.get(executor="query").state == A.DONE
    finally:
        set_policy(alpha.tenant, approval_risk_threshold=0.5)


def test_it_does_not_run_a_rejected_or_expired_action(alpha):
    from datetime import timedelta

    from django.utils import timezone

    connection.set_tenant(alpha.tenant)
    set_policy(alpha.tenant, approval_risk_threshold=0.0)
    try:
        run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]))
        approval = Approval.objects.get(action__run=run)
        approval_decide(tenant=alpha.tenant, approval_id=approval.pk, decision="reject")
        run = drive(alpha.tenant, run)
        assert run.state == R.DONE and run.actions.get(executor="query").state == A.REJECTED

        run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]))
        assert approvals_expire(now=timezone.now() + timedelta(days=2)) == 1
        run = drive(alpha.tenant, run)
        assert run.state == R.DONE and run.actions.get(executor="query").state == A.EXPIRED
        assert Approval.objects.get(action__run=run).state == Approval.State.EXPIRED
    finally:
        set_policy(alpha.tenant, approval_risk_threshold=0.5)


def test_it_refuses_a_foreign_tenants_approval_id(alpha, beta):
    connection.set_tenant(alpha.tenant)
    set_policy(alpha.tenant, approval_risk_threshold=0.0)
    try:
        run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[READ]))
        approval = Approval.objects.get(action__run=run)
        connection.set_tenant(beta.tenant)
        assert not Approval.objects.filter(pk=approval.pk).exists()
        with pytest.raises(NotFound):
            approval_decide(tenant=beta.tenant, approval_id=approval.pk, decision="approve")
        connection.set_tenant(alpha.tenant)
        assert Approval.objects.get(pk=approval.pk).state == Approval.State.PENDING
    finally:
        set_policy(alpha.tenant, approval_risk_threshold=0.5)


def test_it_refuses_and_records_an_executor_the_policy_does_not_allow(alpha):
    connection.set_tenant(alpha.tenant)
    run = drive(alpha.tenant, run_create(tenant=alpha.tenant, actions=[
        {"executor": "shell", "params": {"argv": ["ls"]}}, {"executor": "rm_rf", "params": {}}]))
    assert run.state in (R.DONE, R.WAITING)
    shell = run.actions.get(executor="shell")
    assert shell.state == A.REFUSED and "does not allow" in shell.error and shell.attempts == 0
    assert run.actions.get(executor="rm_rf").state == A.REFUSED


def test_it_runs_nothing_in_dry_run(alpha):
    from autonomy.models import IndexSettings

    connection.set_tenant(alpha.tenant)
    run = run_create(tenant=alpha.tenant, dry_run=True, actions=[
        {"executor": "reindex", "params": {"op": "set_ef_search", "ef_search": 77}},
        {"executor": "reindex", "params": {"op": "rebuild", "model": "all-MiniLM-L6-v2"}}])
    run = drive(alpha.tenant, run)
    assert run.state == R.DONE
    assert all(a.result.get("dry_run") for a in run.actions.filter(executor="reindex"))
    assert IndexSettings.objects.filter(ef_search=77).count() == 0
    assert not ActionOutcome.objects.filter(action__run=run).exists()


def test_it_validates_requested_actions(alpha):
    connection.set_tenant(alpha.tenant)
    for bad in ["x", [1], [{"executor": 3}], [{"executor": "query", "params": []}],
                [{"executor": "query", "expected_gain": 7}]]:
        with pytest.raises(ValidationFailed):
            run_create(tenant=alpha.tenant, actions=bad)


def test_it_keeps_runs_of_one_tenant_invisible_to_another(alpha, beta):
    connection.set_tenant(alpha.tenant)
    run = run_create(tenant=alpha.tenant)
    connection.set_tenant(beta.tenant)
    assert not ImprovementRun.objects.filter(pk=run.pk, created_at=run.created_at).exists()


def test_it_pushes_phase_changes_to_the_tenants_dashboard_group(alpha):
    import asyncio

    from channels.layers import get_channel_layer

    from hartonomous.progress import progress_group

    layer = get_channel_layer()
    loop = asyncio.new_event_loop()
    channel = loop.run_until_complete(layer.new_channel())
    loop.run_until_complete(layer.group_add(progress_group(alpha.slug), channel))
    try:
        connection.set_tenant(alpha.tenant)
        run = drive(alpha.tenant, run_create(tenant=alpha.tenant), until=Phase.HYPOTHESIZE)
        message = loop.run_until_complete(asyncio.wait_for(layer.receive(channel), 10))
        assert message["job"] == "autonomy" and message["run"] == run.pk and message["type"] == "progress.message"
        assert message["state"] in ("analyze", "hypothesize")
    finally:
        loop.run_until_complete(layer.group_discard(progress_group(alpha.slug), channel))
        loop.close()
