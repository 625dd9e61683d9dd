"""Reads about tenants and keys."""
from __future__ import annotations

import time

from django.db.models import QuerySet

from .models import ApiKey, Domain, Tenant


def api_key_by_hash(*, hashed_key: str) -> ApiKey | None:
    return (
        ApiKey.objects.select_related("tenant", "tenant__policy")
        .filter(hashed_key=hashed_key)
        .first()
    )


def api_keys_of(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(tenant=tenant).order_by("-created_at", "-id")


_HOST_TTL = 30.0
_host_cache: dict[str, tuple[float, Tenant | None]] = {}


def tenant_for_host(*, host: str) -> Tenant | None:
    """The tenant a hostname names, cached per process for 30 s (cleared when a Domain or Tenant
    is saved here; other processes see a change within the TTL)."""
    hostname = host.split(":")[0].lower()
    now = time.monotonic()
    hit = _host_cache.get(hostname)
    if hit and now - hit[0] < _HOST_TTL:
        return hit[1]
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    tenant = domain.tenant if domain else None
    if len(_host_cache) > 10_000:
        _host_cache.clear()
    _host_cache[hostname] = (now, tenant)
    return tenant


def forget_hosts(**_) -> None:
    _host_cache.clear()


def tenant_by_slug(*, slug: str) -> Tenant | None:
    return Tenant.objects.select_related("policy").filter(schema_name=slug, is_active=True).first()


def public_tenant() -> Tenant:
    """The public schema's tenant row (an unsaved stand-in before bootstrap made it), cached with the
    host → tenant entries (requests without a credential or a known host would otherwise query it)."""
    from django_tenants.utils import get_public_schema_name

    name = get_public_schema_name()
    hit = _host_cache.get("")  # "" is never a hostname
    if hit and hit[1] is not None and time.monotonic() - hit[0] < _HOST_TTL:
        return hit[1]
    tenant = Tenant.objects.filter(schema_name=name).first()
    if tenant is None:
        return Tenant(schema_name=name, name="public")
    _host_cache[""] = (time.monotonic(), tenant)
    return tenant
