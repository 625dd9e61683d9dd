"""Reads of runs and approvals (the current tenant's schema)."""
from __future__ import annotations

from django.db.models import QuerySet

from .models import Approval, ImprovementRun


def runs_list(*, state: str | None = None) -> QuerySet[ImprovementRun]:
    qs = ImprovementRun.objects.all()
    return qs.filter(state=state) if state else qs


def run_detail(*, run_id: int) -> ImprovementRun | None:
    return (ImprovementRun.objects.prefetch_related("signals", "actions", "actions__approval")
            .filter(pk=run_id).first())


def approvals_pending() -> QuerySet[Approval]:
    return Approval.objects.filter(state=Approval.State.PENDING).select_related("action", "action__run")


def approval_exists(*, approval_id: int) -> bool:
    return Approval.objects.filter(pk=approval_id).exists()
