"""Autonomy loop benchmarks on a real Celery worker + the embedded Redis and PostgreSQL.

1. Phase messages end to end: R runs over T tenants (one active run per tenant, tenants in parallel),
   4 phase messages each; msg/s beside a no-op Celery task measured in the same run on the same worker
   (prefork, --concurrency processes). The runs are queued before the clock starts (creating them is the
   trigger's cost); the clock runs from starting each tenant's first run to the last run's finish.
   Phase overhead = time from a phase's commit to the next phase's start (queue + dispatch), p50/p95.
   CPU ms per message, by process: the worker (main + pool), PostgreSQL (backends of the bench database
   alive at the end: a backend that exits during the run is not counted), Redis, this process.
2. Kill test: for each of N runs, SIGKILL the worker's pool process while the run is in a phase
   (cycling analyze → hypothesize → act → learn); the message comes back (acks_late +
   reject_on_worker_lost), or the stalled-run sweep re-sends it. Counts lost runs and actions claimed
   more than once.

Uses its own database `bench_autonomy` on the embedded server and Redis db 3.

    .venv/bin/python bench/autonomy/bench_autonomy.py            # R=200 over 4 tenants, N=100 kills
    .venv/bin/python bench/autonomy/bench_autonomy.py --quick    # R=20, N=8
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _common import redis_db, swap_db  # noqa: E402

BENCH_DB = "bench_autonomy"
SEED_MSGS, AIM_MSGS, SEED_P95_MS = 100, 500, 500
READ = {"executor": "query", "params": {"sql": "SELECT 1"}}


def bench_env() -> dict[str, str]:
    import psycopg

    from hartonomous import stack

    state = stack.up()
    dev_url = state["postgres"]["url"]
    with psycopg.connect(swap_db(dev_url, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DB]).fetchone():
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    return dict(os.environ, DATABASE_URL=swap_db(dev_url, BENCH_DB), REDIS_URL=redis_db(state["redis"]["url"], 3),
                HARTONOMOUS_EMBEDDED="1", HARTONOMOUS_LOG_LEVEL="WARNING", HARTONOMOUS_DEBUG="0",
                HARTONOMOUS_DEMO="0", DJANGO_SETTINGS_MODULE="hartonomous.settings", PYTHONUNBUFFERED="1")


def setup_django(env: dict[str, str], tenants: int) -> list:
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate_schemas", "--shared", "--noinput", "-v", "0"], cwd=REPO,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    import django

    django.setup()
    from billing.services import prices_ensure_defaults
    from hartonomous.onboarding import tenant_ensure
    from tenants.services import public_tenant_ensure

    public_tenant_ensure()
    prices_ensure_defaults()
    out = []
    for i in range(tenants):
        tenant = tenant_ensure(slug=f"benchauto{i}", name=f"Bench {i}", credits=1e9)
        policy = tenant.policy
        policy.allowed_executors = ["query", "api_call", "shell"]
        policy.shell_whitelist, policy.approval_risk_threshold, policy.max_actions_per_run = ["sleep"], 1.0, 10
        policy.save()
        out.append(tenant)
    return out


class Worker:
    def __init__(self, env: dict[str, str], concurrency: int, **extra):
        self.name = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hartonomous", "worker", "-l", "warning", "-P", "prefork",
             "--concurrency", str(concurrency), "-n", self.name, "--without-gossip", "--without-mingle"],
            cwd=REPO, env=dict(env, **extra), start_new_session=True, stdout=subprocess.DEVNULL)
        from hartonomous.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError("worker did not start")

    def children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self):
        try:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown of the main process; it stops its pool
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _clear(tenants):
    from django_tenants.utils import schema_context

    from autonomy.models import ImprovementRun

    for t in tenants:
        with schema_context(t.schema_name):
            ImprovementRun.objects.all().delete()


def _cpu_seconds(pid: int | None, only: str = "") -> dict[int, float]:
    """CPU seconds by process: `pid` (with its reaped children) and its live children; with `only`,
    just the children whose command line holds it (PostgreSQL backends of one database)."""
    import psutil

    out: dict[int, float] = {}
    if not pid:
        return out
    try:
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        if not only:
            out[pid] = t.user + t.system + t.children_user + t.children_system
        if pid == os.getpid():  # this process: its children are the worker, counted on its own
            return {pid: t.user + t.system}
        for child in proc.children(recursive=True):
            try:
                if only and only not in " ".join(child.cmdline()):
                    continue
                c = child.cpu_times()
                out[child.pid] = c.user + c.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return out


class CpuSplit:
    """Where the CPU went while a block ran: the worker (main + pool), PostgreSQL (the backends of the
    bench database only: other people's work on the shared server is left out), Redis (shared: may hold
    other work), this process (promotes the first runs and polls)."""

    def __init__(self, worker_pid: int):
        from hartonomous import stack

        state = stack.read_state()
        self.pids = {"worker": worker_pid, "postgres": state.get("postgres", {}).get("pid"),
                     "redis": state.get("redis", {}).get("pid"), "bench client": os.getpid()}

    def _sample(self) -> dict[str, dict[int, float]]:
        return {k: _cpu_seconds(p, BENCH_DB if k == "postgres" else "") for k, p in self.pids.items()}

    def __enter__(self):
        self.start = self._sample()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        end = self._sample()
        self.used = {k: sum(v - self.start[k].get(pid, 0.0) for pid, v in end[k].items()) for k in end}

    def per_message(self, msgs: int) -> str:
        parts = [f"{k} {v / msgs * 1000:.1f}" for k, v in self.used.items()]
        return (f"CPU ms per message: {', '.join(parts)}; total {sum(self.used.values()) / msgs * 1000:.1f} "
                f"(machine busy {sum(self.used.values()) / self.wall / (os.cpu_count() or 1) * 100:.0f}% of "
                f"{os.cpu_count()} vCPU from these)")


def _pct(values, q):
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def bench_noop(n: int) -> float:
    from autonomy.tasks import noop_task

    t0 = time.perf_counter()
    results = [noop_task.delay("public", i) for i in range(n)]
    for r in results:
        r.get(timeout=120)
    return n / (time.perf_counter() - t0)


def _left(tenants) -> int:
    """Runs not finished yet, over all the tenants, in one statement."""
    from django.db import connection

    union = " UNION ALL ".join(
        f'SELECT count(*) FROM "{t.schema_name}".autonomy_improvementrun WHERE state NOT IN '
        "('done', 'stopped', 'failed')" for t in tenants)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT sum(n) FROM ({union}) AS counts(n)")
        return int(cursor.fetchone()[0] or 0)


def queue_runs(tenants, runs: int) -> None:
    """`runs` runs round-robin over the tenants, queued, not started: creating them is the trigger's
    cost, not the phase messages'."""
    from django_tenants.utils import schema_context

    from autonomy.services import run_create

    _clear(tenants)
    for i in range(runs):
        tenant = tenants[i % len(tenants)]
        with schema_context(tenant.schema_name):
            run_create(tenant=tenant, trigger="bench", actions=[READ], start=False)


def bench_phases(tenants, runs: int) -> dict:
    """Start each tenant's first queued run and time until the last one is done. Each later run is
    started by the worker when its tenant's previous run finishes (one active run per tenant)."""
    from datetime import datetime

    from django_tenants.utils import schema_context

    from autonomy.models import ImprovementRun
    from autonomy.services import run_promote

    t0, wall0 = time.perf_counter(), time.time()
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            run_promote(tenant=tenant)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and _left(tenants):
        time.sleep(0.1)
    overheads, phase_ms, states, last = [], [], {}, wall0
    for t in tenants:
        with schema_context(t.schema_name):
            for run in ImprovementRun.objects.all():
                states[run.state] = states.get(run.state, 0) + 1
                last = max(last, run.finished_at.timestamp() if run.finished_at else time.time())
                prev = run.started_at.timestamp()
                for entry in run.phase_log:
                    end = datetime.fromisoformat(entry["at"]).timestamp()
                    start = end - entry["ms"] / 1000
                    overheads.append((start - prev) * 1000)
                    phase_ms.append(entry["ms"])
                    prev = end
    elapsed = last - wall0  # the last run's finish, not the poll that saw it
    return {"msgs": 4 * runs, "seconds": elapsed, "msg_s": 4 * runs / elapsed, "states": states,
            "poll_seconds": time.perf_counter() - t0,
            "overhead_p50": _pct(overheads, 50), "overhead_p95": _pct(overheads, 95),
            "phase_p50": _pct(phase_ms, 50), "phase_p95": _pct(phase_ms, 95)}


def bench_kill(env, tenant, runs: int) -> dict:
    from django_tenants.utils import schema_context

    from autonomy.models import CandidateAction, ImprovementRun
    from autonomy.services import run_create, runs_resume_stalled

    _clear([tenant])
    worker = Worker(env, 1, HARTONOMOUS_AUTONOMY_PHASE_PAUSE_S="0.3")
    phases = ["analyze", "hypothesize", "act", "learn"]
    lost, killed, swept, t0 = 0, 0, 0, time.perf_counter()
    try:
        for i in range(runs):
            phase = phases[i % 4]
            with schema_context(tenant.schema_name):
                run = run_create(tenant=tenant, trigger="bench",
                                 actions=[READ, {"executor": "shell", "params": {"argv": ["sleep", "0.5"]}}])
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and ImprovementRun.objects.get(pk=run.pk).phase != phase:
                    time.sleep(0.01)
                time.sleep(0.15 if phase != "act" else 0.6)
                for pid in worker.children():
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    run.refresh_from_db()
                    if run.state in ("done", "stopped", "failed"):
                        break
                    if time.monotonic() > deadline - 10 and run.state == "running":
                        swept += len(runs_resume_stalled(stale_seconds=2))
                    time.sleep(0.05)
                if run.state != "done":
                    lost += 1
        with schema_context(tenant.schema_name):
            twice = CandidateAction.objects.filter(attempts__gt=1).count()
            interrupted = CandidateAction.objects.filter(error__startswith="interrupted").count()
            executed = CandidateAction.objects.filter(attempts=1).count()
    finally:
        worker.stop()
    return {"runs": runs, "kills": killed, "lost": lost, "twice": twice, "interrupted": interrupted,
            "executed": executed, "swept": swept, "seconds": time.perf_counter() - t0}


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        model = platform.processor() or "unknown"
    return f"{model}, {os.cpu_count()} vCPU"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None, help="write the figures to this markdown file")
    args = parser.parse_args()
    runs = args.runs or (20 if args.quick else 200)
    kills = args.kills if args.kills is not None else (8 if args.quick else 100)
    env = bench_env()
    tenants = setup_django(env, args.tenants)
    worker = Worker(env, args.concurrency)
    try:
        bench_noop(50)  # warm-up
        with CpuSplit(worker.proc.pid) as noop_cpu:
            noop = bench_noop(runs * 4)
        queue_runs(tenants, runs)
        with CpuSplit(worker.proc.pid) as phase_cpu:
            phases = bench_phases(tenants, runs)
        queue_runs(tenants[:1], max(runs // 10, 5))
        latency = bench_phases(tenants[:1], max(runs // 10, 5))  # one tenant: no queueing behind other runs
    finally:
        worker.stop()
    kill = bench_kill(env, tenants[0], kills) if kills else None
    lines = [
        f"machine: {machine()} (load average {os.getloadavg()[0]:.1f} while running: shared with other work); "
        f"worker prefork concurrency {args.concurrency}; {args.tenants} tenants",
        f"no-op Celery task: {noop:.0f} msg/s",
        f"phase messages: {phases['msg_s']:.0f} msg/s ({phases['msgs']} msgs, {phases['seconds']:.1f} s, runs "
        f"{phases['states']}) = {phases['msg_s'] / noop:.2f}x the no-op task; seed asks >= {SEED_MSGS}, aim {AIM_MSGS}",
        f"phase overhead (commit -> next phase starts): p50 {phases['overhead_p50']:.1f} ms, "
        f"p95 {phases['overhead_p95']:.1f} ms (seed < {SEED_P95_MS} ms)",
        f"phase overhead, one tenant at a time (no queueing): p50 {latency['overhead_p50']:.1f} ms, "
        f"p95 {latency['overhead_p95']:.1f} ms; {latency['msg_s']:.0f} msg/s for a single tenant's sequential runs",
        f"phase work: p50 {phases['phase_p50']:.1f} ms, p95 {phases['phase_p95']:.1f} ms",
        f"no-op task {noop_cpu.per_message(runs * 4)}",
        f"phase messages {phase_cpu.per_message(phases['msgs'])}",
    ]
    if kill:
        lines.append(f"kill test: {kill['runs']} runs, {kill['kills']} SIGKILLs of the pool process across the 4 "
                     f"phases: lost {kill['lost']}, actions claimed twice {kill['twice']}, interrupted (not "
                     f"repeated) {kill['interrupted']}, executed once {kill['executed']}, sweep re-sends "
                     f"{kill['swept']}, {kill['seconds']:.0f} s")
    print("\n".join(lines))
    if args.write:
        args.write.write_text("# Autonomy benchmarks\n\n`" + " ".join(sys.argv) + "`\n\n" +
                              "\n".join(f"- {line}" for line in lines) + "\n")


if __name__ == "__main__":
    main()
