"""The executors' guards: every refusal the issue lists, tried for real."""
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from autonomy.executors import Context, Refused, executor_for, network_isolation_available
from autonomy.models import ImprovementRun
from autonomy.tests.helpers import set_policy

pytestmark = pytest.mark.django_db
DEFAULT = ["reindex", "recluster", "reembed", "query", "api_call"]


@pytest.fixture
def shell_policy(alpha):
    set_policy(alpha.tenant, allowed_executors=[*DEFAULT, "shell"], shell_whitelist=["echo", "pwd", "env", "cat", "ls"])
    yield alpha
    set_policy(alpha.tenant, allowed_executors=DEFAULT, shell_whitelist=[])


def _shell(tenant, argv, tmp_path, dry_run=False, **params):
    ctx = Context(tenant=tenant, dry_run=dry_run, jail=tmp_path)
    executor = executor_for("shell", tenant=tenant)
    executor.check({"argv": argv, **params}, ctx)
    return executor.run({"argv": argv, **params}, ctx)


def test_it_refuses_an_executor_the_policy_does_not_allow(alpha):
    with pytest.raises(Refused, match="does not allow"):
        executor_for("shell", tenant=alpha.tenant)
    with pytest.raises(Refused, match="Unknown executor"):
        executor_for("eval", tenant=alpha.tenant)


def test_it_refuses_a_command_outside_the_whitelist(shell_policy, tmp_path):
    for argv in (["rm", "-rf", "x"], ["/bin/sh", "-c", "id"], ["bash"], ["echo; rm -rf /"], ["python3"],
                 ["./echo"], ["echo\x00"]):
        with pytest.raises(Refused, match="whitelist"):
            _shell(shell_policy.tenant, argv, tmp_path)


def test_it_refuses_argument_injection_and_path_escapes(shell_policy, tmp_path):
    for argv in (["cat", "../../etc/passwd"], ["cat", "/etc/passwd"], ["ls", "a/../../.."], ["cat", "~root/x"],
                 ["ls", "--color=/etc/x"], ["echo", "a\x00b"], ["echo", "a\nb"], ["ls", "-exec", "rm"],
                 ["cat", "--output=/tmp/x"]):
        with pytest.raises(Refused):
            _shell(shell_policy.tenant, argv, tmp_path)
    with pytest.raises(Refused):
        _shell(shell_policy.tenant, "echo hi", tmp_path)


def test_it_runs_a_whitelisted_command_without_a_shell_in_a_scrubbed_jail(shell_policy, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    out = _shell(shell_policy.tenant, ["echo", "$(id)", "`id`", "a;b", "|x"], tmp_path)
    assert out["stdout"] == "$(id) `id` a;b |x\n" and out["returncode"] == 0
    env = _shell(shell_policy.tenant, ["env"], tmp_path)["stdout"]
    assert set(line.split("=")[0] for line in env.split()) == {"PATH", "LANG"}
    assert _shell(shell_policy.tenant, ["pwd"], tmp_path)["stdout"].strip() == str(Path(tmp_path).resolve())
    (tmp_path / "inside.txt").write_text("ok")
    assert _shell(shell_policy.tenant, ["cat", str(tmp_path / "inside.txt")], tmp_path)["stdout"] == "ok"


def test_it_cuts_the_network_when_unshare_works(shell_policy, tmp_path):
    if not network_isolation_available():
        pytest.skip("unshare -n is not permitted here; the shell executor runs without network isolation")
    set_policy(shell_policy.tenant, shell_whitelist=["ls", "echo"])
    result = _shell(shell_policy.tenant, ["ls"], tmp_path)
    assert result["network_isolated"] is True and result["argv"][0].endswith("/ls")


def test_it_times_out_a_long_command(shell_policy, tmp_path):
    set_policy(shell_policy.tenant, shell_whitelist=["sleep"])
    out = _shell(shell_policy.tenant, ["sleep", "5"], tmp_path, timeout_s=0.5)
    assert out["status"] == "timeout"


def test_it_only_describes_in_dry_run(shell_policy, tmp_path):
    out = _shell(shell_policy.tenant, ["echo", "x"], tmp_path, dry_run=True)
    assert out["status"] == "dry_run" and "stdout" not in out


def _query(tenant, sql, dry_run=False):
    ctx = Context(tenant=tenant, dry_run=dry_run)
    executor = executor_for("query", tenant=tenant)
    executor.check({"sql": sql}, ctx)
    return executor.run({"sql": sql}, ctx)


def test_it_refuses_a_query_that_writes(alpha):
    connection.set_tenant(alpha.tenant)
    for sql in ("DELETE FROM autonomy_improvementrun", "SELECT 1; DELETE FROM autonomy_improvementrun",
                "UPDATE autonomy_improvementrun SET error='x'", "DROP TABLE autonomy_signal",
                "select 1;select 2", "EXPLAIN ANALYZE DELETE FROM autonomy_signal", "", "SET ROLE postgres"):
        with pytest.raises(Refused):
            _query(alpha.tenant, sql)
    # a write hidden in a CTE passes the parser and is stopped by the read-only transaction
    with pytest.raises(Refused, match="refused by the database"):
        _query(alpha.tenant, "WITH gone AS (DELETE FROM autonomy_improvementrun RETURNING id) SELECT * FROM gone")
    with pytest.raises(Refused):
        _query(alpha.tenant, "SELECT pg_sleep(0) FROM (SELECT set_config('x.y', '1', false)) s, "
                             "LATERAL (SELECT nextval('autonomy_improvementrun_id_seq')) n")
    assert ImprovementRun.objects.count() >= 0  # the connection still works after the refusals


def test_it_reads_only_the_tenants_schema(alpha, beta):
    connection.set_tenant(alpha.tenant)
    out = _query(alpha.tenant, "SELECT count(*) FROM autonomy_improvementrun")
    assert out["rows"][0][0] >= 0 and out["columns"] == ["count"]
    if not out["read_only_role"]:
        pytest.skip("cannot create the read-only role here; the schema boundary is search_path only")
    for sql in (f'SELECT * FROM "{beta.slug}".autonomy_improvementrun', "SELECT * FROM public.tenants_apikey"):
        with pytest.raises(Refused, match="refused by the database"):
            _query(alpha.tenant, sql)


def test_it_limits_query_time(alpha):
    connection.set_tenant(alpha.tenant)
    ctx = Context(tenant=alpha.tenant, dry_run=False)
    executor = executor_for("query", tenant=alpha.tenant)
    with pytest.raises(Refused, match="refused by the database"):
        executor.run({"sql": "SELECT pg_sleep(2)", "timeout_ms": 100}, ctx)


def test_it_refuses_api_calls_to_anything_but_internal_services(alpha):
    connection.set_tenant(alpha.tenant)
    executor = executor_for("api_call", tenant=alpha.tenant)
    ctx = Context(tenant=alpha.tenant, dry_run=False)
    for params in ({"service": "http://169.254.169.254/latest"}, {"url": "http://example.com"}, {"service": "os.system"}):
        with pytest.raises(Refused):
            executor.check(params, ctx)
    assert "balance" in executor.run({"service": "credit_balance"}, ctx)["result"]


def test_it_tunes_ef_search_and_reindexes(alpha, beta):
    from autonomy.models import IndexSettings

    connection.set_tenant(alpha.tenant)
    executor, ctx = executor_for("reindex", tenant=alpha.tenant), Context(tenant=alpha.tenant, dry_run=False)
    for bad in ({"op": "drop"}, {"op": "rebuild", "model": "x; DROP TABLE y"}, {"op": "set_ef_search", "ef_search": 0},
                {"op": "set_ef_search", "ef_search": "40"}):
        with pytest.raises(Refused):
            executor.check(bad, ctx)
    from atoms.selectors import _ef_cache, effective_ef_search

    _ef_cache.clear()
    assert effective_ef_search(10) == settings.SEARCH_EF_SEARCH  # nothing tuned yet
    executor.run({"op": "set_ef_search", "ef_search": 264}, ctx)
    assert IndexSettings.objects.get().ef_search == 264
    _ef_cache.clear()  # (search re-reads the tuned value within 10 s anyway)
    assert effective_ef_search(10) == 264 and effective_ef_search(300) == 300 and effective_ef_search(10, 50) == 50
    connection.set_tenant(beta.tenant)
    assert effective_ef_search(10) == settings.SEARCH_EF_SEARCH  # beta's searches keep their own setting
    connection.set_tenant(alpha.tenant)
    out = executor.run({"op": "rebuild", "model": "all-MiniLM-L6-v2"}, ctx)
    assert out["statement"].startswith(f'REINDEX INDEX "{alpha.slug}".')


def test_it_reports_recluster_unavailable_until_concepts_ships_it(alpha):
    from autonomy.executors import concepts_discover

    connection.set_tenant(alpha.tenant)
    out = executor_for("recluster", tenant=alpha.tenant).run({}, Context(tenant=alpha.tenant, dry_run=False))
    assert out["status"] == ("unavailable" if concepts_discover() is None else "done")
