"""Errors, correlation ids, schema and docs, retention: the platform skeleton in process."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import Price
from hartonomous.retention import prune_history
from tenants.models import ApiKey
from tenants.services import api_key_create
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db


def test_it_returns_the_callers_correlation_id(alpha, api):
    response = api(alpha.keys["read"]).get("/api/tenant", HTTP_X_CORRELATION_ID="abc-123")
    assert response["X-Correlation-ID"] == "abc-123"


def test_it_replaces_an_unsafe_correlation_id(alpha, api):
    response = api(alpha.keys["read"]).get("/api/tenant", HTTP_X_CORRELATION_ID="x" * 500)
    assert len(response["X-Correlation-ID"]) == 32


def test_it_answers_unknown_api_paths_with_the_error_shape(alpha, api):
    assert_error_shape(api(alpha.keys["read"]).get("/api/no/such/thing"), 404)


def test_it_answers_unsupported_media_with_the_error_shape(alpha, api):
    response = api(alpha.keys["all"]).client.post("/api/keys", data="x=1", content_type="text/plain")
    assert_error_shape(response, 415)


def test_it_answers_broken_json_with_the_error_shape(alpha, api):
    response = api(alpha.keys["all"]).client.post("/api/keys", data="{not json", content_type="application/json")
    assert_error_shape(response, 400)


def test_it_serves_the_schema_and_swagger_offline(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/keys" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert b"cdn.jsdelivr" not in docs.content  # assets come from the sidecar, not a CDN


def test_it_serves_the_admin_login(client):
    assert client.get("/admin/login/").status_code == 200


def test_it_prunes_operational_history_and_keeps_regulatory_records(alpha):
    key, _ = api_key_create(tenant=alpha.tenant, name="aging", scopes=["read"])
    price = Price.objects.create(meter="test.aging", credits_per_unit=1)
    now = timezone.now()
    ApiKey.history.filter(id=key.pk).update(history_date=now - timedelta(days=100))
    Price.history.filter(id=price.pk).update(history_date=now - timedelta(days=100))
    with override_settings(REGULATORY_HISTORY_APPS=["billing"]):
        deleted = prune_history()
        assert not ApiKey.history.filter(id=key.pk).exists()
        assert Price.history.filter(id=price.pk).exists()  # regulatory: 7 years
        Price.history.filter(id=price.pk).update(history_date=now - timedelta(days=8 * 365))
        prune_history()
        assert not Price.history.filter(id=price.pk).exists()
    assert deleted["public.tenants.historicalapikey"] >= 1


def test_the_embedded_postgres_runs_with_settings_sized_for_this_machine():
    """`hartonomous up` applies pg_settings() (initdb's 128 MB shared_buffers would keep a 1M-vector
    HNSW index out of the buffer cache); skipped where DATABASE_URL points at an outside server."""
    from django.db import connection

    from hartonomous import stack

    state = stack.read_state().get("postgres", {})
    if not state or state.get("external"):
        pytest.skip("PostgreSQL is not the embedded server")
    with connection.cursor() as cursor:
        for name, wanted in stack.pg_settings().items():
            cursor.execute("SELECT current_setting(%s)", [name])
            assert cursor.fetchone()[0] == wanted, name


def test_settings_scale_with_memory_and_stay_within_bounds():
    from hartonomous.stack import pg_settings

    small, large = pg_settings(1 << 30), pg_settings(256 << 30)
    assert small["shared_buffers"] == "256MB" and small["maintenance_work_mem"] == "128MB"
    assert large["shared_buffers"] == "8GB" and large["maintenance_work_mem"] == "4GB"
    assert pg_settings(23 << 30)["shared_buffers"] == "5GB"
