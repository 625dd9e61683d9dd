"""Drive a run's phases in-process (what the worker does), for tests that need no broker."""
from __future__ import annotations

from django.db import connection

from autonomy.models import ImprovementRun, Phase
from autonomy.services import phase_execute


def drive(tenant, run: ImprovementRun, *, until: str = Phase.DONE, max_steps: int = 10) -> ImprovementRun:
    connection.set_tenant(tenant)
    for _ in range(max_steps):
        run.refresh_from_db()
        if run.phase == until or run.state != ImprovementRun.State.RUNNING:
            break
        phase_execute(tenant=tenant, run_id=run.pk, phase=run.phase)
    run.refresh_from_db()
    return run


def set_policy(tenant, **fields):
    policy = tenant.policy
    for key, value in fields.items():
        setattr(policy, key, value)
    policy.save()
    return policy
