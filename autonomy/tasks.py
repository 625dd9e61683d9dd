"""Autonomy tasks: one per phase message plus the beat sweeps; thin wrappers around services."""
from __future__ import annotations

import copy
import time

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

from .deadletter import DeadLetterTask, TransientError

TENANT_CACHE_S = 30.0
_tenants: dict[str, tuple[float, object]] = {}


def _tenant(schema: str, *, fresh: bool = True):
    """The tenant, with its policy, read fresh. With `fresh=False` (phases that read no policy) the row
    is kept per process for TENANT_CACHE_S (its identity does not change) and handed out as a copy, so
    a policy loaded through one copy is never seen by another."""
    if fresh:
        return get_tenant_model().objects.select_related("policy").get(schema_name=schema)
    now, hit = time.monotonic(), _tenants.get(schema)
    if hit is None or now - hit[0] > TENANT_CACHE_S:
        hit = _tenants[schema] = (now, get_tenant_model().objects.get(schema_name=schema))
    return copy.copy(hit[1])


def _tenant_schemas() -> list[str]:
    return list(get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
                .filter(is_active=True).values_list("schema_name", flat=True))


@shared_task(base=DeadLetterTask, bind=True, name="autonomy.phase", ignore_result=True)
def phase_task(self, schema: str, run_id: int, phase: str) -> str:
    from .services import phase_execute

    try:
        with schema_context(schema):  # Act reads the policy (thresholds, whitelists, budgets): always fresh
            tenant = _tenant(schema, fresh=phase == "act")
            outcome = phase_execute(tenant=tenant, run_id=run_id, phase=phase)
    except (OperationalError, InterfaceError) as exc:  # the database blinked: retry with backoff
        raise TransientError(repr(exc)) from exc
    if outcome == "busy":  # another worker holds this run: look again shortly (a duplicate ends as skipped)
        raise self.retry(countdown=0.2, max_retries=100)
    return outcome


@shared_task(base=DeadLetterTask, bind=True, name="autonomy.trigger")
def trigger_task(self, schema: str, trigger: str = "beat") -> int:
    from .services import run_create

    with schema_context(schema):
        return run_create(tenant=_tenant(schema), trigger=trigger).pk


@shared_task(name="autonomy.trigger_all", acks_late=True)
def trigger_all_task() -> list[str]:
    """Beat: queue a run in every active tenant."""
    schemas = _tenant_schemas()
    for schema in schemas:
        trigger_task.delay(schema, "beat")
    return schemas


@shared_task(name="autonomy.sweep", acks_late=True)
def sweep_task(stale_seconds: float = 120) -> dict:
    """Beat: expire unanswered approvals and re-send phase messages of stalled runs, in every tenant."""
    from .services import approvals_expire, runs_resume_stalled

    out = {}
    for schema in _tenant_schemas():
        with schema_context(schema):
            out[schema] = {"expired": approvals_expire(), "resumed": runs_resume_stalled(stale_seconds=stale_seconds)}
    return out


@shared_task(base=DeadLetterTask, bind=True, name="autonomy.noop")
def noop_task(self, schema: str, n: int = 0) -> int:
    """The benchmark's peer: a task that does nothing."""
    return n


@shared_task(base=DeadLetterTask, bind=True, name="autonomy.flaky")
def flaky_task(self, schema: str, fail_times: int, transient: bool = True) -> int:
    """Fails `fail_times` times (transiently or not) before succeeding: exercises backoff and dead letters."""
    if self.request.retries < fail_times:
        if transient:
            raise TransientError(f"attempt {self.request.retries} failed on purpose")
        raise ValueError("a poison message")
    return self.request.retries
