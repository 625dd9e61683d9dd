"""Tenant resolution: by credential first (API key / JWT), then by hostname, else public."""
from __future__ import annotations

from django.db import connection

from .authentication import CredentialError, authenticate_credential
from .selectors import public_tenant, tenant_for_host


class TenantResolutionMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        connection.set_schema_to_public()
        request.principal, request.auth_error = None, None
        if request.path.startswith("/health/"):  # probes need no tenant and no credential
            request.tenant = None
            return self.get_response(request)
        try:
            request.principal = authenticate_credential(request.META)
        except CredentialError as exc:
            request.auth_error = str(exc)
        tenant = request.principal.tenant if request.principal else tenant_for_host(host=request.get_host())
        request.tenant = tenant or public_tenant()
        connection.set_tenant(request.tenant)
        try:
            return self.get_response(request)
        finally:
            connection.set_schema_to_public()


class RateLimitHeadersMiddleware:
    """Copies the rate-limit decision made by the throttle onto the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        decision = getattr(request, "rate_limit", None)
        if decision is not None:
            response["X-RateLimit-Limit"] = str(decision.limit)
            response["X-RateLimit-Remaining"] = str(decision.remaining)
            response["X-RateLimit-Reset"] = str(decision.reset_after)
        return response
