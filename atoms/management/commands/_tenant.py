"""Shared by the atom commands: `--tenant SLUG` resolved to a tenant whose schema is then active."""
from __future__ import annotations

from django.core.management.base import CommandError
from django.db import connection

from tenants.selectors import tenant_by_slug


def activate_tenant(slug: str):
    tenant = tenant_by_slug(slug=slug)
    if tenant is None:
        raise CommandError(f"No active tenant {slug!r}.")
    connection.set_tenant(tenant)
    return tenant
