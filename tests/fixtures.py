"""Shared fixtures: tenants and keys, API clients, live ASGI server and Celery worker subprocesses."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TenantKeys:
    tenant: object
    keys: dict[str, str] = field(default_factory=dict)  # role -> raw key

    @property
    def slug(self) -> str:
        return self.tenant.schema_name


def _make_tenant(slug: str, credits: float = 1000) -> TenantKeys:
    from hartonomous.onboarding import tenant_ensure
    from tenants.services import api_key_create

    tenant = tenant_ensure(slug=slug, name=slug.title(), domain=f"{slug}.localhost", credits=credits)
    roles = {
        "all": ["read", "write", "generate", "admin"],
        "read": ["read"],
        "write": ["read", "write"],
        "generate": ["generate"],
    }
    keys = {role: api_key_create(tenant=tenant, name=f"{slug}-{role}", scopes=scopes)[1] for role, scopes in roles.items()}
    return TenantKeys(tenant, keys)


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """Create and migrate the test database once (whatever the tests' marks), then the public tenant,
    prices and two tenants with keys; drop it at the end."""
    from django.test.utils import setup_databases, teardown_databases

    from billing.services import prices_ensure_defaults
    from tenants.services import public_tenant_ensure

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set())
        public_tenant_ensure()
        prices_ensure_defaults()
        tenants = {slug: _make_tenant(slug) for slug in ("alpha", "beta")}
    django_db_setup_tenants.update(tenants)
    yield
    with django_db_blocker.unblock():
        from django.db import connections

        connections.close_all()
        _disconnect_others(config)
        teardown_databases(config, verbosity=0)


django_db_setup_tenants: dict[str, TenantKeys] = {}


def _disconnect_others(config) -> None:
    """Threads of commands under test may leave connections to the test database open."""
    import psycopg

    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        for connection, _name, _destroy in config:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                         "AND pid <> pg_backend_pid()", [connection.settings_dict["NAME"]])


@pytest.fixture
def alpha(django_db_setup) -> TenantKeys:
    return django_db_setup_tenants["alpha"]


@pytest.fixture
def beta(django_db_setup) -> TenantKeys:
    return django_db_setup_tenants["beta"]


@pytest.fixture
def committed(django_db_setup, django_db_blocker):
    """Database access without a wrapping transaction: writes are visible to other processes."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(autouse=True)
def _public_schema_after_each_test():
    yield
    try:
        from django.db import connection

        connection.set_schema_to_public()
    except Exception:
        pass


class Api:
    """DRF test client bound to one raw key (or none)."""

    def __init__(self, key: str | None = None):
        from rest_framework.test import APIClient

        self.client = APIClient()
        if key:
            self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def __getattr__(self, method):
        def call(path, data=None, **kwargs):
            fmt = kwargs.pop("format", "json")
            return getattr(self.client, method)(path, data, format=fmt, **kwargs)

        return call


@pytest.fixture
def api():
    return Api


# ---------------------------------------------------------------- live processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url_for_tests() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = os.environ["DATABASE_URL"]
    prefix, _, rest = url.partition("?")
    base = prefix.rsplit("/", 1)[0]
    return f"{base}/{db['TEST']['NAME']}" + (f"?{rest}" if rest else "")


def live_env() -> dict:
    env = os.environ.copy()
    env["DATABASE_URL"] = database_url_for_tests()
    env["HARTONOMOUS_EMBEDDED"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def asgi_server(django_db_setup, tmp_path_factory):
    """The real ASGI server (uvicorn) on the test database. Yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("asgi") / "asgi.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "hartonomous.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log"],
            cwd=ROOT, env=live_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/health/live", proc)
    except RuntimeError:
        _stop(proc)
        raise RuntimeError(log.read_text()[-4000:]) from None
    yield base
    _stop(proc)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, tmp_path_factory):
    """A real Celery worker process on the test database and the embedded Redis."""
    from hartonomous.celery import app

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    name = f"test-{os.getpid()}@localhost"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hartonomous", "worker", "-l", "info", "-P", "prefork",
             "--concurrency", "2", "-n", name, "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=live_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text()[-4000:])
        if app.control.ping(destination=[name], timeout=0.5):
            break
    else:
        _stop(proc)
        raise RuntimeError("the Celery worker did not answer a ping in 60 s:\n" + log.read_text()[-4000:])
    yield name
    _stop(proc)


@pytest.fixture(scope="session", autouse=True)
def _clean_test_redis_and_blobs():
    """Start each session with an empty Redis database of its own; remove its blob and model roots at the end."""
    import shutil

    import redis

    url = os.environ.get("REDIS_URL", "")
    if "db=0" not in url and url.startswith("unix://"):
        redis.Redis.from_url(url).flushdb()
    yield
    for name, marker in (("HARTONOMOUS_BLOB_ROOT", "test-blobs"), ("HARTONOMOUS_MODEL_ROOTS", "test-models")):
        root = os.environ.get(name, "")
        if marker in root:
            shutil.rmtree(root, ignore_errors=True)
