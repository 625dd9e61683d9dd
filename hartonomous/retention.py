"""History retention: operational history is pruned after 90 days, regulatory records kept 7 years."""
from __future__ import annotations

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context


def _app_label(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def history_models(*, public: bool) -> list:
    """History models whose tables live in the public schema (public=True) or in tenant schemas."""
    labels = {_app_label(a) for a in (settings.SHARED_APPS if public else settings.TENANT_APPS)}
    if not public:
        labels -= {_app_label(a) for a in settings.SHARED_APPS}
    return [
        m for m in apps.get_models()
        if m.__name__.startswith("Historical") and hasattr(m, "history_date") and m._meta.app_label in labels
    ]


def retention_days(model) -> int:
    if model._meta.app_label in settings.REGULATORY_HISTORY_APPS:
        return settings.REGULATORY_RETENTION_DAYS
    return settings.HISTORY_RETENTION_DAYS


def _prune_schema(schema: str, now) -> dict[str, int]:
    deleted = {}
    with schema_context(schema):
        for model in history_models(public=schema == get_public_schema_name()):
            cutoff = now - timedelta(days=retention_days(model))
            count, _ = model.objects.filter(history_date__lt=cutoff).delete()
            if count:
                deleted[f"{schema}.{model._meta.label_lower}"] = count
    return deleted


def prune_history(now=None) -> dict[str, int]:
    """Delete history rows older than their retention, in every schema. Returns counts per table."""
    now = now or timezone.now()
    deleted: dict[str, int] = {}
    schemas = [get_public_schema_name()] + list(
        get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).values_list("schema_name", flat=True)
    )
    for schema in schemas:
        deleted.update(_prune_schema(schema, now))
    return deleted
