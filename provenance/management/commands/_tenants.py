from __future__ import annotations


def tenants_for(schema: str | None):
    """The tenants a command acts on: one by schema name, or every tenant but public."""
    from django.core.management.base import CommandError
    from django_tenants.utils import get_public_schema_name

    from tenants.models import Tenant

    qs = Tenant.objects.exclude(schema_name=get_public_schema_name()).order_by("schema_name")
    if schema:
        qs = qs.filter(schema_name=schema)
        if not qs.exists():
            raise CommandError(f"No tenant with schema {schema!r}.")
    return list(qs)
