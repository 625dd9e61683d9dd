"""Per-tenant and per-key limits in the real Redis: 429 with Retry-After and X-RateLimit-* headers."""
from __future__ import annotations

import uuid

import pytest

from hartonomous.onboarding import tenant_ensure
from tenants import ratelimit
from tenants.services import api_key_create, policy_update
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(django_db_setup):
    tenant = tenant_ensure(slug="limited", name="Limited")
    policy_update(tenant=tenant, requests_per_minute=600, requests_per_minute_per_key=60, burst=2)
    ratelimit._client().delete(f"rl:t:{tenant.schema_name}")  # each test starts with a full bucket
    return tenant


def test_it_limits_a_key_and_says_when_to_retry(limited, api):
    _, raw = api_key_create(tenant=limited, name=uuid.uuid4().hex[:8], scopes=["read"])
    client = api(raw)
    statuses = [client.get("/api/tenant") for _ in range(6)]
    ok = [r for r in statuses if r.status_code == 200]
    refused = [r for r in statuses if r.status_code == 429]
    assert len(ok) == 3 and len(refused) == 3  # one steady slot + a burst of two
    assert ok[0]["X-RateLimit-Limit"] == "60"
    assert int(ok[0]["X-RateLimit-Remaining"]) > int(ok[-1]["X-RateLimit-Remaining"]) >= 0
    error = assert_error_shape(refused[0], 429)
    assert int(refused[0]["Retry-After"]) >= 1 and error["details"]["retry_after"] >= 1


def test_it_counts_keys_separately_but_the_tenant_together(limited, api):
    policy_update(tenant=limited, requests_per_minute=60, requests_per_minute_per_key=600, burst=1)
    keys = [api_key_create(tenant=limited, name=uuid.uuid4().hex[:8], scopes=["read"])[1] for _ in range(3)]
    results = [api(keys[i % 3]).get("/api/tenant").status_code for i in range(6)]
    assert results.count(200) == 2 and results.count(429) == 4  # the tenant bucket is shared


def test_it_does_not_limit_another_tenant(limited, beta, api):
    policy_update(tenant=limited, requests_per_minute=60, requests_per_minute_per_key=60, burst=0)
    _, raw = api_key_create(tenant=limited, name=uuid.uuid4().hex[:8], scopes=["read"])
    [api(raw).get("/api/tenant") for _ in range(3)]
    assert api(beta.keys["read"]).get("/api/tenant").status_code == 200


def test_a_tenant_without_a_policy_row_gets_the_default_limits(django_db_setup, api, settings):
    from tenants.models import TenantSecurityPolicy

    tenant = tenant_ensure(slug="nopolicy", name="No policy")
    TenantSecurityPolicy.objects.filter(tenant=tenant).delete()
    ratelimit._client().delete(f"rl:t:{tenant.schema_name}")
    _, raw = api_key_create(tenant=tenant, name=uuid.uuid4().hex[:8], scopes=["read"])
    response = api(raw).get("/api/tenant")
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == str(TenantSecurityPolicy().requests_per_minute_per_key)
