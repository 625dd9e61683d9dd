"""Profile one run's four phases in this process (no Celery): statements, wall time and CPU time (this
process's Python and its PostgreSQL backend's) per phase, plus an optional cProfile of CPU time
(written to /tmp/autonomy-phase.prof). Uses the benchmark's database (bench_autonomy).

    .venv/bin/python bench/autonomy/profile_phase.py [--runs 20] [--sql] [--cprofile]
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_autonomy import READ, bench_env, setup_django  # noqa: E402


def _statements(tenant, runs: int, show: bool) -> None:
    import psutil
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_tenants.utils import schema_context

    from autonomy.models import ImprovementRun
    from autonomy.services import phase_execute, run_create

    per_phase = collections.defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = psutil.Process(cursor.fetchone()[0])

    def cpu() -> tuple[float, float]:
        t = backend.cpu_times()
        return time.process_time(), t.user + t.system

    for i in range(runs):
        with schema_context(tenant.schema_name):
            ImprovementRun.objects.exclude(state__in=["done", "stopped", "failed"]).delete()
            run = run_create(tenant=tenant, trigger="bench", actions=[READ])
            for phase in ["analyze", "hypothesize", "act", "learn"]:
                with CaptureQueriesContext(connection) as ctx:
                    t0, (py0, pg0) = time.perf_counter(), cpu()
                    assert phase_execute(tenant=tenant, run_id=run.pk, phase=phase) == "done"
                    ms, (py1, pg1) = (time.perf_counter() - t0) * 1000, cpu()
                per_phase[phase].append((ms, len(ctx.captured_queries), (py1 - py0) * 1000, (pg1 - pg0) * 1000))
                if show and i == runs - 1:
                    print(f"--- {phase}: {len(ctx.captured_queries)} statements")
                    for q in ctx.captured_queries:
                        print(f"  {float(q['time']) * 1000:6.2f} ms  {q['sql'][:150]}")
    for phase, rows in per_phase.items():
        rows = rows[1:] or rows  # the first run warms caches
        n = len(rows)
        print(f"{phase:12s} wall {sum(r[0] for r in rows) / n:6.2f} ms  statements {sum(r[1] for r in rows) / n:5.1f}"
              f"  CPU: python {sum(r[2] for r in rows) / n:6.2f} ms, postgres backend {sum(r[3] for r in rows) / n:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sql", action="store_true", help="print every statement of the last run")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    env = bench_env()
    tenant = setup_django(env, 1)[0]
    from django.conf import settings

    settings.DEBUG = False  # CaptureQueriesContext forces the debug cursor for the statement count
    if args.cprofile:
        prof = cProfile.Profile(time.process_time)
        prof.enable()
    _statements(tenant, args.runs, args.sql)
    if args.cprofile:
        prof.disable()
        prof.dump_stats("/tmp/autonomy-phase.prof")  # for pstats / snakeviz
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
