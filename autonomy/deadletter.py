"""A reusable Celery base for poison messages: retries with exponential backoff 1, 2, 4, 8, 16 s,
then a DeadLetter row (task, args, error, traceback, tenant) that the admin can requeue or discard.

    @shared_task(base=DeadLetterTask, name="app.thing", bind=True)
    def thing(self, schema, ...): ...

Tasks take the tenant schema as first argument (house convention); the dead letter is written in
that schema. Raise `TransientError` (or a subclass) for a failure worth retrying; any other
exception dead-letters at once.
"""
from __future__ import annotations

import logging
import traceback as tb

from celery import Task
from django.utils import timezone
from django_tenants.utils import schema_context

log = logging.getLogger(__name__)


class TransientError(Exception):
    """A failure that may pass: retried with backoff before dead-lettering."""


RETRY_OPTIONS = dict(autoretry_for=(TransientError,), retry_backoff=1, retry_backoff_max=16,
                     retry_jitter=False, max_retries=5)


class DeadLetterTask(Task):
    abstract = True
    autoretry_for = (TransientError,)
    retry_backoff = 1
    retry_backoff_max = 16
    retry_jitter = False
    max_retries = 5
    acks_late = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Called once the task gives up (after the last retry or on a non-transient error)."""
        schema = args[0] if args and isinstance(args[0], str) else kwargs.get("schema")
        if not schema:
            log.error("task %s failed without a tenant schema; not dead-lettered: %s", self.name, exc)
            return
        try:
            dead_letter_record(schema=schema, task=self.name, task_id=task_id, args=list(args),
                               kwargs=dict(kwargs), retries=self.request.retries, error=repr(exc),
                               traceback=str(einfo) if einfo else tb.format_exc())
        except Exception:  # the dead-letter table itself being unreachable must not hide the error
            log.exception("could not dead-letter %s", self.name)


def dead_letter_record(*, schema: str, task: str, task_id: str = "", args: list, kwargs: dict, retries: int,
                       error: str, traceback: str = ""):
    from .models import DeadLetter

    with schema_context(schema):
        return DeadLetter.objects.create(task=task, task_id=task_id or "", tenant=schema, args=_json(args),
                                         kwargs=_json(kwargs), retries=retries, error=error[:10000],
                                         traceback=traceback[-20000:])


def _json(value):
    import json

    return json.loads(json.dumps(value, default=str))


def dead_letter_requeue(*, letter) -> str:
    """Send the task again with its original arguments; the row is kept as `requeued`."""
    from celery import current_app

    from .models import DeadLetter

    if letter.state != DeadLetter.State.DEAD:
        from hartonomous.errors import Conflict

        raise Conflict("Only a dead letter can be requeued.", details={"state": letter.state})
    result = current_app.send_task(letter.task, args=letter.args, kwargs=letter.kwargs)
    letter.state, letter.resolved_at = DeadLetter.State.REQUEUED, timezone.now()
    letter.save(update_fields=["state", "resolved_at"])
    return result.id


def dead_letter_discard(*, letter):
    from .models import DeadLetter

    letter.state, letter.resolved_at = DeadLetter.State.DISCARDED, timezone.now()
    letter.save(update_fields=["state", "resolved_at"])
    return letter
