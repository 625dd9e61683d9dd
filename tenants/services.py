"""Every write about tenants, policies and API keys."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from hartonomous.errors import Conflict, NotFound, ValidationFailed

from .models import SCOPES, ApiKey, Domain, Tenant, TenantSecurityPolicy

KEY_PREFIX = "hk_"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def public_tenant_ensure() -> Tenant:
    """The row django-tenants uses for the public schema (idempotent)."""
    tenant, _ = Tenant.objects.get_or_create(
        schema_name=get_public_schema_name(), defaults={"name": "Public (platform)"}
    )
    return tenant


def _validate_slug(slug: str) -> None:
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_]{1,40}", slug or "") or slug == get_public_schema_name():
        raise ValidationFailed(
            "Tenant slugs are 2-41 characters of a-z, 0-9 and _, starting with a letter.",
            details={"slug": slug},
        )


def tenant_create(*, slug: str, name: str, domain: str | None = None) -> Tenant:
    """Create a tenant with its schema, policy and (optionally) a domain.

    Other layers react to the new tenant through post_save (billing opens its credit balance).
    """
    _validate_slug(slug)
    if Tenant.objects.filter(schema_name=slug).exists():
        raise Conflict(f"Tenant {slug!r} already exists.", details={"slug": slug})
    tenant = Tenant(schema_name=slug, name=name)
    tenant.save(verbosity=0)  # creates and migrates the schema (outside a transaction: DDL is long)
    with transaction.atomic():
        TenantSecurityPolicy.objects.get_or_create(tenant=tenant)
        if domain:
            Domain.objects.get_or_create(domain=domain, defaults={"tenant": tenant, "is_primary": True})
    return tenant


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        raise ValidationFailed(
            f"Scopes must be a non-empty subset of {', '.join(SCOPES)}.", details={"unknown": unknown}
        )
    return sorted(set(scopes))


def api_key_create(
    *, tenant: Tenant, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns (row, raw key). The raw key is never stored and cannot be shown again."""
    scopes = _validate_scopes(list(scopes))
    if not name or len(name) > 100:
        raise ValidationFailed("A key needs a name of 1-100 characters.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("expires_at must be in the future.")
    prefix = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():  # the key and its history row in one commit
        key = ApiKey.objects.create(
            tenant=tenant, name=name, prefix=prefix, hashed_key=hash_key(raw), scopes=scopes, expires_at=expires_at
        )
    return key, raw


def api_key_revoke(*, tenant: Tenant, key_id: int) -> ApiKey:
    key = ApiKey.objects.filter(tenant=tenant, pk=key_id).first()
    if key is None:
        raise NotFound("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def api_key_touch(*, key_id: int, last_used_at: datetime | None) -> None:
    """Record use at most once a minute per key (no write per request)."""
    now = timezone.now()
    if last_used_at and (now - last_used_at).total_seconds() < 60:
        return
    ApiKey.objects.filter(pk=key_id).update(last_used_at=now)


def policy_update(*, tenant: Tenant, **fields) -> TenantSecurityPolicy:
    policy, _ = TenantSecurityPolicy.objects.get_or_create(tenant=tenant)
    for name, value in fields.items():
        setattr(policy, name, value)
    policy.full_clean()
    policy.save()
    return policy
