"""Keeping the replication outbox bounded.

Sent events are kept `OUTBOX_KEEP_DAYS` (for replay-from-position), then pruned. With no replica
configured (NEO4J_URI unset) nothing will ever send the queue, so unsent events older than that are
pruned too; when a replica is configured later, `outbox_resync` queues every node and edge once (the
replica MERGEs, so a full resync is idempotent) — `manage.py replica_resync`.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hartonomous.env import env_int

from .models import OutboxEvent, ProvEdge, ProvNode
from .replica import replica_uri
from .services import edge_payload, in_tenant, node_payload

__all__ = ["outbox_prune", "outbox_resync"]


def keep_days() -> int:
    return env_int("OUTBOX_KEEP_DAYS", 7)


def outbox_prune(*, tenant, older_than: timedelta | None = None) -> int:
    """Delete sent events older than the retention (and unsent ones too when there is no replica)."""
    cutoff = timezone.now() - (older_than if older_than is not None else timedelta(days=keep_days()))
    old = Q(created_at__lt=cutoff)
    done = Q(sent_at__isnull=False) | Q(dead=True, dead_letter__resolved_at__isnull=False)
    with in_tenant(tenant):
        qs = OutboxEvent.objects.filter(old if not replica_uri() else old & done)
        return qs.delete()[0]


def outbox_resync(*, tenant, batch: int = 5000) -> int:
    """Queue every node, then every edge, once more (e.g. a replica configured after a while)."""
    count = 0
    with in_tenant(tenant):
        for model, payload in ((ProvNode, node_payload), (ProvEdge, edge_payload)):
            last = 0
            while rows := list(model.objects.filter(pk__gt=last).order_by("pk")[:batch]):
                with transaction.atomic():
                    OutboxEvent.objects.bulk_create([OutboxEvent(payload=payload(r)) for r in rows])
                count, last = count + len(rows), rows[-1].pk
    return count
