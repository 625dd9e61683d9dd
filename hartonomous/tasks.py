"""Platform tasks: history retention."""
from __future__ import annotations

from celery import shared_task

from .retention import prune_history


@shared_task(name="hartonomous.tasks.prune_history", acks_late=True)
def prune_history_task() -> dict:
    return prune_history()


@shared_task(name="hartonomous.tasks.diagnostics")
def diagnostics() -> dict:
    """What a worker sees: its correlation id and database schema (for operators and tests)."""
    from django.db import connection

    from . import correlation

    return {"correlation_id": correlation.get(), "schema": connection.schema_name}
