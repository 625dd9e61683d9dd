"""DRF throttle backed by the Redis GCRA limiter, with limits from the tenant's policy."""
from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from hartonomous.errors import Throttled

from . import ratelimit
from .models import TenantSecurityPolicy
from .principal import Principal

DEFAULT_POLICY = TenantSecurityPolicy()  # unsaved: only its default limits are read


class TenantRateThrottle(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        principal = request.user
        if not settings.RATE_LIMIT_ENABLED or not isinstance(principal, Principal):
            return True
        policy = principal.policy or DEFAULT_POLICY  # a tenant without a policy row gets the defaults, not no limit
        decision = ratelimit.check(
            tenant_key=principal.tenant.schema_name,
            key_key=principal.rate_key,
            tenant_rate=policy.requests_per_minute,
            key_rate=policy.requests_per_minute_per_key,
            burst=policy.burst,
        )
        request._request.rate_limit = decision
        if not decision.allowed:
            raise Throttled(
                "Rate limit exceeded; retry later.",
                details={"retry_after": decision.retry_after, "limit": decision.limit},
            )
        return True
