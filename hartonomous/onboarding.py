"""Onboarding wires the layers together: a tenant from `tenants`, its first credits from `billing`."""
from __future__ import annotations

from billing.services import credits_grant
from tenants.models import Domain, Tenant
from tenants.services import tenant_create


def tenant_onboard(*, slug: str, name: str, domain: str | None = None, credits: float = 0) -> Tenant:
    tenant = tenant_create(slug=slug, name=name, domain=domain)
    if credits:
        credits_grant(tenant=tenant, amount=credits, reason="initial grant")
    return tenant


def tenant_ensure(*, slug: str, name: str, domain: str | None = None, credits: float = 0) -> Tenant:
    """Idempotent onboarding for the demo and fixtures."""
    existing = Tenant.objects.filter(schema_name=slug).first()
    if existing is None:
        return tenant_onboard(slug=slug, name=name, domain=domain, credits=credits)
    if domain:
        Domain.objects.get_or_create(domain=domain, defaults={"tenant": existing, "is_primary": True})
    return existing
