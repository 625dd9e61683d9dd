"""Resolve a request's credential (API key or OIDC JWT) to a Principal and its tenant.

The middleware calls `authenticate_credential` once per request; the DRF authentication classes
only hand its result to DRF, so one API host serves every tenant.
"""
from __future__ import annotations

from django.conf import settings
from rest_framework import authentication, exceptions

from .oidc import TokenInvalid, decode, scopes_from_claims
from .principal import Principal
from .selectors import api_key_by_hash, tenant_by_slug
from .services import KEY_PREFIX, api_key_touch, hash_key


class CredentialError(Exception):
    pass


def credential_from_meta(meta) -> str | None:
    header = meta.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CredentialError("Authorization must be 'Bearer <api key or token>'.")
        return token.strip()
    return meta.get("HTTP_X_API_KEY") or None


def principal_from_api_key(raw: str) -> Principal:
    key = api_key_by_hash(hashed_key=hash_key(raw))
    if key is None or not key.is_active or not key.tenant.is_active:
        raise CredentialError("The API key is invalid, expired or revoked.")
    api_key_touch(key_id=key.pk, last_used_at=key.last_used_at)
    policy = getattr(key.tenant, "policy", None)
    return Principal(key.tenant, frozenset(key.scopes), "api_key", key.prefix, key.pk, policy)


def principal_from_jwt(token: str) -> Principal:
    try:
        claims = decode(token)
    except TokenInvalid as exc:
        raise CredentialError(f"The bearer token is not valid: {exc}") from None
    tenant = tenant_by_slug(slug=str(claims.get(settings.OIDC_TENANT_CLAIM, "")))
    if tenant is None:
        raise CredentialError("The token names no known tenant.")
    return Principal(tenant, scopes_from_claims(claims), "jwt", str(claims["sub"]), None,
                     getattr(tenant, "policy", None))


def authenticate_credential(meta) -> Principal | None:
    raw = credential_from_meta(meta)
    if raw is None:
        return None
    if raw.startswith(KEY_PREFIX):
        return principal_from_api_key(raw)
    if raw.count(".") == 2:
        return principal_from_jwt(raw)
    raise CredentialError("The credential is neither an API key nor a JWT.")


class _FromMiddleware(authentication.BaseAuthentication):
    kind = ""

    def authenticate(self, request):
        error = getattr(request._request, "auth_error", None)
        if error:
            raise exceptions.AuthenticationFailed(error)
        principal = getattr(request._request, "principal", None)
        if principal is None or principal.kind != self.kind:
            return None
        return principal, principal

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ApiKeyAuthentication(_FromMiddleware):
    kind = "api_key"


class JWTAuthentication(_FromMiddleware):
    kind = "jwt"
