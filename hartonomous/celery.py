"""The Celery app; correlation ids travel in task headers."""
from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hartonomous.settings")

HEADER = "x_correlation_id"
app = Celery("hartonomous")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.before_task_publish.connect
def _attach_correlation_id(headers=None, **_):
    from . import correlation

    if headers is not None and HEADER not in headers:
        headers[HEADER] = correlation.get() or correlation.new_id()


@signals.task_prerun.connect
def _drop_broken_db_connections(**_):
    """With CELERY_DB_REUSE_MAX a connection outlives its task: close one that failed and no longer
    answers (what Django does at the start of a request), so the next task reconnects."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred and not conn.is_usable():
            conn.close()


@signals.task_prerun.connect
def _adopt_correlation_id(task=None, **_):
    from . import correlation

    # not `request.correlation_id`: Celery uses that name for the task id
    value = getattr(task.request, HEADER, None) or (task.request.headers or {}).get(HEADER)
    task.request._correlation_token = correlation.set_id(correlation.accept(value))


@signals.task_postrun.connect
def _drop_correlation_id(task=None, **_):
    from . import correlation

    token = getattr(task.request, "_correlation_token", None)
    if token is not None:
        correlation.reset(token)
