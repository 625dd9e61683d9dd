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
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BENCH_DB = "bench_atoms"
REDIS_DB = 9  # db 2: bench/api, db 3: the autonomy bench's Celery worker (it would run our tasks)
TENANT_SLUG = "bench"

sys.path.insert(0, str(REPO))


def _swap_db(url: str, name: str) -> str:
    return re.sub(r"^(postgresql://[^/]*/)([^?]*)", lambda m: m.group(1) + name, url)


def _redis_db(url: str, db: int) -> str:
    if url.startswith("unix://"):
        base, _, query = url.partition("?")
        parts = [p for p in query.split("&") if p and not p.startswith("db=")]
        return f"{base}?{'&'.join(parts + [f'db={db}'])}"
    return re.sub(r"^(redis://[^/?]+)(/\d*)?", lambda m: f"{m.group(1)}/{db}", url)


def _recreate_database(dev_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_swap_db(dev_url, "postgres"), autocommit=True) as conn:
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
        DATABASE_URL=_swap_db(dev_url, db),
        REDIS_URL=_redis_db(redis_url, REDIS_DB),
        HARTONOMOUS_EMBEDDED="1",
        HARTONOMOUS_LOG_LEVEL="WARNING",
        HARTONOMOUS_DEBUG="0",
        HARTONOMOUS_DEMO="0",
        HARTONOMOUS_DB_CONN_MAX_AGE="0",
        DJANGO_SETTINGS_MODULE="hartonomous.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


SETUP_SNIPPET = r"""
from billing.services import prices_ensure_defaults
from hartonomous.onboarding import tenant_ensure
from tenants.services import api_key_create, policy_update, public_tenant_ensure
public_tenant_ensure()
prices_ensure_defaults()
tenant = tenant_ensure(slug="bench", name="Bench", credits=1e9)
policy_update(tenant=tenant, requests_per_minute=10_000_000, requests_per_minute_per_key=10_000_000, burst=100_000)
key, raw = api_key_create(tenant=tenant, name="bench", scopes=["read", "write", "generate", "admin"])
print("BENCH_KEY=" + raw)
"""


def prepare(env: dict[str, str]) -> str:
    """Migrate the bench database and make the tenant + key; returns the raw API key."""
    t0 = time.perf_counter()
    subprocess.run([PY, "manage.py", "migrate_schemas", "--noinput", "-v", "0"], cwd=REPO, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([PY, "manage.py", "shell", "-c", SETUP_SNIPPET], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    key = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("BENCH_KEY="))
    db = re.match(r"^postgresql://[^/]*/([^?]*)", env["DATABASE_URL"]).group(1)
    print(f"set-up: database {db} recreated + migrated, tenant '{TENANT_SLUG}' + key ready "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return key.strip()


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


# ------------------------------------------------------------------ HTTP server (bench_search)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str], port: int, workers: int = 2) -> subprocess.Popen:
    import httpx

    args = [PY, "-m", "uvicorn", "hartonomous.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("uvicorn did not answer /health/live within 60 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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
