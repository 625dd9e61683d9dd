"""Shared set-up for the atom-store benchmarks (bench_ingest, bench_search, bench_relevance).

Same approach as bench/api/bench_api.py: `hartonomous.stack.up()` starts/reuses the embedded
PostgreSQL + Redis; the benches use their own database `bench_atoms` on that server (dropped and
recreated on every run) and Redis db 9 (no Celery worker listens there, so the embedding tasks that ingest queues on
commit stay queued and are deleted at the end), so the dev database is never touched. Migrations, the public
tenant, prices, a `bench` tenant with 1e9 credits, a high-limit policy and an all-scope API key are
made in a subprocess with the bench environment; the bench process then sets up Django in-process
against the same database.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from _common import free_port, prepare, redis_db, start_server, stop_server, swap_db  # noqa: E402,F401 (re-exported to the bench scripts)

PY = sys.executable
BENCH_DB = "bench_atoms"
REDIS_DB = 9  # db 2: bench/api, db 3: the autonomy bench's Celery worker (it would run our tasks)
TENANT_SLUG = "bench"

sys.path.insert(0, str(REPO))


def _recreate_database(dev_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(swap_db(dev_url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _retry_too_many_clients(fn, seconds: float = 120):
    """The embedded server is shared (max_connections 100): wait out "too many clients" from other work."""
    import psycopg

    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except psycopg.OperationalError as exc:
            if "too many clients" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def bench_env(db: str = BENCH_DB, recreate: bool = True) -> dict[str, str]:
    """The environment of the bench database `db` (each script has its own, so they can run side by
    side); drops and recreates it when `recreate`."""
    os.environ.pop("DATABASE_URL", None)
    from hartonomous import stack

    state = _retry_too_many_clients(stack.up)
    dev_url, redis_url = state["postgres"]["url"], state["redis"]["url"]
    if recreate:
        _retry_too_many_clients(lambda: _recreate_database(dev_url, db))
    env = dict(os.environ)
    env.update(
        DATABASE_URL=swap_db(dev_url, db),
        REDIS_URL=redis_db(redis_url, REDIS_DB),
        HARTONOMOUS_EMBEDDED="1",
        HARTONOMOUS_LOG_LEVEL="WARNING",
        HARTONOMOUS_DEBUG="0",
        HARTONOMOUS_DEMO="0",
        HARTONOMOUS_DB_CONN_MAX_AGE="0",
        DJANGO_SETTINGS_MODULE="hartonomous.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def django_init(env: dict[str, str]):
    """Set up Django in this process against the bench database; returns the bench tenant, with the
    connection switched to its schema."""
    os.environ.update(env)
    import django

    django.setup()
    from django.db import connection
    from django_tenants.utils import get_tenant_model

    tenant = get_tenant_model().objects.get(schema_name=TENANT_SLUG)
    connection.set_tenant(tenant)
    return tenant


def flush_redis(env: dict[str, str]) -> None:
    """Delete the Celery queue/result keys this run left in the bench's Redis db (the embedding tasks
    that ingest queues on commit); only Celery's own key patterns, never the whole db."""
    import redis

    try:
        client = redis.Redis.from_url(env["REDIS_URL"])
        keys = [k for pattern in ("celery", "celery-task-meta-*", "_kombu.*", "unacked*")
                for k in client.scan_iter(match=pattern)]
        if keys:
            client.delete(*keys)
    except Exception as exc:  # noqa: BLE001 - best effort clean-up
        print(f"(redis db {REDIS_DB} not cleaned: {exc})")


def psycopg_connect(env: dict[str, str], schema: str = TENANT_SLUG):
    """A plain psycopg connection to the bench database with search_path = tenant schema, public."""
    import psycopg
    from pgvector.psycopg import register_vector

    conn = _retry_too_many_clients(lambda: psycopg.connect(env["DATABASE_URL"], autocommit=True))
    conn.execute(f'SET search_path TO "{schema}", public')
    register_vector(conn)
    return conn


# ------------------------------------------------------------------ CPU accounting
def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of these processes and their descendants (e.g. a PostgreSQL backend, or a
    uvicorn supervisor and its workers)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        procs = [root]
        try:
            procs += root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


class Meter:
    """Wall time, CPU of the given processes (this process is always included) and the share of the
    machine's CPU used by everything else (*foreign load*: other people's work on a shared box)."""

    def __init__(self, pids: list[int] | None = None, include_self: bool = True):
        self.pids = list(pids or []) + ([os.getpid()] if include_self else [])

    def __enter__(self):
        import psutil

        self._t, self._cpu, self._busy = time.perf_counter(), cpu_seconds(self.pids), _busy(psutil)
        return self

    def __exit__(self, *exc):
        import psutil

        self.wall = time.perf_counter() - self._t
        self.cpu = cpu_seconds(self.pids) - self._cpu
        busy = _busy(psutil) - self._busy
        self.foreign_pct = max(0.0, busy - self.cpu) / (self.wall * (os.cpu_count() or 1)) * 100


def _busy(psutil) -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------ reporting
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    idx = min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[idx]


def machine() -> str:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor()}, {os.cpu_count()} vCPU, Python {platform.python_version()}"


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
