"""History for every domain model: simple-history with the API principal recorded as the actor.

API calls are made by keys and tokens, not Django users: `history_user` stays for admin users and
the principal (`api_key:<prefix>` / `jwt:<sub>`) goes into `history_change_reason` when none is given.
"""
from __future__ import annotations

from django.dispatch import receiver
from simple_history.models import HistoricalRecords
from simple_history.signals import pre_create_historical_record


def _django_user(instance=None, request=None, **kwargs):
    user = getattr(request, "user", None) if request is not None else None
    if user is None or not hasattr(user, "_meta") or not user.is_authenticated:
        return None
    return user


class History(HistoricalRecords):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("get_user", _django_user)
        super().__init__(*args, **kwargs)


@receiver(pre_create_historical_record, dispatch_uid="hartonomous.history.principal")
def _record_principal(sender, history_instance=None, **kwargs):
    request = getattr(HistoricalRecords.context, "request", None)
    principal = getattr(request, "principal", None)
    if principal is not None and not history_instance.history_change_reason:
        history_instance.history_change_reason = f"{principal}"[:100]
