"""Liveness and readiness: the database, Redis, a Celery worker and applied migrations."""
from __future__ import annotations

import time

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse


def live(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    from tenants.ratelimit import _client

    _client().ping()
    return "ok"


def _check_celery() -> str:
    from .celery import app

    replies = app.control.ping(timeout=1.0, limit=1)
    if not replies:
        raise RuntimeError("no Celery worker answered a ping within 1 s")
    return f"{len(replies)} worker(s)"


def _check_migrations() -> str:
    connection.set_schema_to_public()
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migration(s) not applied")
    return "ok"


def _check_replica() -> str:
    from provenance.replica import replica_health

    return replica_health()


CHECKS = {"database": _check_database, "redis": _check_redis, "celery": _check_celery,
          "migrations": _check_migrations, "replica": _check_replica}


def ready(request):
    results, healthy = {}, True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as exc:  # a readiness probe reports, it does not raise
            detail, ok = str(exc) or type(exc).__name__, False
        healthy &= ok
        results[name] = {"ok": ok, "detail": detail, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return JsonResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status=200 if healthy else 503)
