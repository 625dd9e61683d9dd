"""Set-up shared by the bench scripts: database/Redis URL rewriting and a uvicorn server to measure.

Each bench script puts this folder on sys.path (`sys.path.insert(0, str(Path(__file__).resolve().parents[1]))`)
and imports what it needs; nothing here touches a database.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def swap_db(url: str, name: str) -> str:
    return re.sub(r"^(postgresql://[^/]*/)([^?]*)", lambda m: m.group(1) + name, url)


def redis_db(url: str, db: int) -> str:
    if url.startswith("unix://"):
        base, _, query = url.partition("?")
        parts = [p for p in query.split("&") if p and not p.startswith("db=")]
        return f"{base}?{'&'.join(parts + [f'db={db}'])}"
    return re.sub(r"^(redis://[^/?]+)(/\d*)?", lambda m: f"{m.group(1)}/{db}", url)



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


# ------------------------------------------------------------------ bench database
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
    print(f"set-up: database {db} migrated, tenant 'bench' + key ready "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return key.strip()
