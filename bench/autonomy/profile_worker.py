"""CPU profile of a real Celery worker (one process: `-P solo`) while it runs the phase messages of
`--runs` runs over the bench tenants: what a phase message costs the worker beyond the phase itself
(Celery, the tenant lookup, schema switching, dashboard pushes).

    .venv/bin/python bench/autonomy/profile_worker.py --runs 40     # writes /tmp/autonomy-worker.prof
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _worker_main(out: str) -> None:
    """Runs inside the profiled child: the Celery CLI under cProfile (CPU time), stats dumped at exit."""
    from celery.__main__ import main

    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--out", default="/tmp/autonomy-worker.prof")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        sys.argv = ["celery", *rest]
        return _worker_main(args.out)
    from bench_autonomy import REPO, bench_env, bench_phases, queue_runs, setup_django

    env = bench_env()
    tenants = setup_django(env, args.tenants)
    name = f"prof-{uuid.uuid4().hex[:6]}@localhost"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--out", args.out, "-A", "hartonomous", "worker", "-l", "warning",
         "-P", "solo", "-n", name, "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    from hartonomous.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not app.control.ping(destination=[name], timeout=0.5):
        pass
    queue_runs(tenants, args.runs)
    result = bench_phases(tenants, args.runs)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    print(f"{result['msg_s']:.0f} msg/s with one solo worker process (load average {os.getloadavg()[0]:.1f})")
    stats = pstats.Stats(args.out)
    total = sum(v[2] for v in stats.stats.values())  # tottime of everything = CPU seconds of the worker
    print(f"worker CPU per phase message: {total / (4 * args.runs) * 1000:.1f} ms")
    stats.sort_stats("cumulative").print_stats(r"autonomy/|celery/app/trace|kombu/messaging|hartonomous/", 30)


if __name__ == "__main__":
    main()
