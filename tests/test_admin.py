"""The admin on the public host and on a tenant's host: each shows what lives in its schema."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("root-admin", "root@localhost", "a-long-password-1")
    client.force_login(user)
    return client


def test_the_public_admin_shows_platform_models(staff):
    index = staff.get("/admin/", HTTP_HOST="localhost")
    assert index.status_code == 200 and b"/admin/tenants/tenant/" in index.content
    assert b"/admin/atoms/atom/" not in index.content
    assert staff.get("/admin/tenants/apikey/", HTTP_HOST="localhost").status_code == 200
    assert staff.get("/admin/atoms/atom/", HTTP_HOST="localhost").status_code == 403
    # object pages of a tenant model on the public host: refused, not a 500 on a missing table
    for page in ("1/change/", "1/history/", "1/delete/", "add/"):
        assert staff.get(f"/admin/atoms/atom/{page}", HTTP_HOST="localhost").status_code == 403, page


def test_a_tenant_admin_shows_the_tenants_data(staff, alpha):
    index = staff.get("/admin/", HTTP_HOST="alpha.localhost")
    assert index.status_code == 200 and b"/admin/atoms/atom/" in index.content
    assert b"/admin/tenants/tenant/" not in index.content
    assert staff.get("/admin/atoms/atom/", HTTP_HOST="alpha.localhost").status_code == 200
    assert staff.get("/admin/tenants/tenant/", HTTP_HOST="alpha.localhost").status_code == 403
