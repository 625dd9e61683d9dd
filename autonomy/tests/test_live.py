"""The loop on real Celery workers: all four phases end to end, and a worker SIGKILLed during each
phase: the run resumes on a fresh worker, nothing is lost and no action runs twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from django.db import connection

from autonomy.models import ImprovementRun
from autonomy.services import PAUSE_ENV, QUEUE_ENV, run_create, runs_resume_stalled
from autonomy.tests.helpers import set_policy
from tests.fixtures import ROOT, live_env

pytestmark = pytest.mark.live
READ = {"executor": "query", "params": {"sql": "SELECT 1"}}
FINAL = ("done", "stopped", "failed")


def _wait(tenant, run_id, predicate, timeout=60.0) -> ImprovementRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection.set_tenant(tenant)
        run = ImprovementRun.objects.get(pk=run_id)
        if predicate(run):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} stuck at {run.state}/{run.phase}")


def _cleanup(tenant):
    connection.set_tenant(tenant)
    ImprovementRun.objects.all().delete()
    connection.set_schema_to_public()


def test_it_runs_all_four_phases_on_the_real_worker(celery_worker, committed, alpha):
    connection.set_tenant(alpha.tenant)
    try:
        run = run_create(tenant=alpha.tenant, actions=[READ])
        run = _wait(alpha.tenant, run.pk, lambda r: r.state in FINAL)
        assert run.state == "done", (run.state, run.error)
        assert [p["phase"] for p in run.phase_log] == ["analyze", "hypothesize", "act", "learn"]
        action = run.actions.get(executor="query")
        assert action.state == "done" and action.attempts == 1
    finally:
        _cleanup(alpha.tenant)


def _sessions_opened() -> int:
    """PostgreSQL sessions ever opened to the test database (pg_stat_database.sessions)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_it_keeps_the_workers_database_connections_between_phase_messages(celery_worker, committed, alpha):
    """Celery 5.7 closed a prefork child's connection pool after every task (celery#10554), so every
    phase message opened new PostgreSQL sessions; the worker now keeps its connections."""
    connection.set_tenant(alpha.tenant)
    try:
        run = run_create(tenant=alpha.tenant, actions=[READ])  # warm: each pool process connects once
        _wait(alpha.tenant, run.pk, lambda r: r.state in FINAL)
        time.sleep(1.5)  # let the sessions' statistics reach pg_stat_database
        before = _sessions_opened()
        for _ in range(5):  # 20 phase messages
            run = run_create(tenant=alpha.tenant, actions=[READ])
            run = _wait(alpha.tenant, run.pk, lambda r: r.state in FINAL)
            assert run.state == "done", (run.state, run.error)
        time.sleep(1.5)
        assert _sessions_opened() - before <= 4
    finally:
        _cleanup(alpha.tenant)


class Worker:
    def __init__(self, queue: str, tmp_path):
        env = live_env() | {QUEUE_ENV: queue, PAUSE_ENV: "0.8"}
        self.name = f"kill-{uuid.uuid4().hex[:8]}@localhost"
        self.log = tmp_path / f"{self.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "hartonomous", "worker", "-l", "info", "-P", "prefork",
                 "--concurrency", "1", "-n", self.name, "-Q", queue, "--without-gossip", "--without-mingle",
                 "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        from hartonomous.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise AssertionError("worker did not start: " + self.log.read_text()[-3000:])

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def test_it_survives_a_worker_killed_in_each_phase_without_repeating_an_action(committed, beta, tmp_path, monkeypatch):
    queue = f"autonomy-kill-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(QUEUE_ENV, queue)
    connection.set_tenant(beta.tenant)
    set_policy(beta.tenant, allowed_executors=["query", "shell"], shell_whitelist=["sleep"], approval_risk_threshold=1.0)
    worker = Worker(queue, tmp_path)
    try:
        for phase in ("analyze", "hypothesize", "act", "learn"):
            connection.set_tenant(beta.tenant)
            run = run_create(tenant=beta.tenant, actions=[READ, {"executor": "shell", "params": {"argv": ["sleep", "1"]}}])
            _wait(beta.tenant, run.pk, lambda r, p=phase: r.phase == p)
            time.sleep(0.4 if phase != "act" else 1.2)  # inside the phase (act: while `sleep 1` runs or after)
            worker.kill()
            worker = Worker(queue, tmp_path)
            connection.set_tenant(beta.tenant)
            assert runs_resume_stalled(stale_seconds=0) == [run.pk]
            run = _wait(beta.tenant, run.pk, lambda r: r.state in FINAL)
            assert run.state == "done", (phase, run.state, run.error)
            assert all(a.attempts <= 1 for a in run.actions.all()), phase
            assert run.actions.filter(attempts=1).count() >= 1
    finally:
        worker.stop()
        set_policy(beta.tenant, allowed_executors=["reindex", "recluster", "reembed", "query", "api_call"],
                   shell_whitelist=[], approval_risk_threshold=0.5)
        _cleanup(beta.tenant)
