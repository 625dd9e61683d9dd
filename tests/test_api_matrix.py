"""Every registered endpoint, the same four checks."""
from __future__ import annotations

import pytest

from tests.api_matrix import all_endpoints, assert_error_shape

ENDPOINTS = all_endpoints()
IDS = [e.name for e in ENDPOINTS]
LACKING = {"read": "generate", "write": "read", "admin": "write", "generate": "write"}

pytestmark = pytest.mark.django_db


def _call(api, endpoint, params, body=None):
    return getattr(api, endpoint.method)(endpoint.url(params), body)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_serves_the_owner(endpoint, alpha, api):
    params = endpoint.make(alpha) if endpoint.make else None
    body = endpoint.body(alpha) if endpoint.body else None
    response = _call(api(alpha.keys["all"]), endpoint, params, body)
    assert response.status_code == endpoint.ok_status, response.content[:500]
    assert response["X-Correlation-ID"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_requires_authentication(endpoint, alpha, api):
    params = endpoint.make(alpha) if endpoint.make else None
    response = _call(api(None), endpoint, params, endpoint.body(alpha) if endpoint.body else None)
    assert_error_shape(response, 401)
    bogus = _call(api("hk_deadbeef_not-a-real-key"), endpoint, params)
    assert_error_shape(bogus, 401)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_it_requires_the_scope(endpoint, alpha, api):
    params = endpoint.make(alpha) if endpoint.make else None
    key = alpha.keys[LACKING[endpoint.scope]]
    response = _call(api(key), endpoint, params, endpoint.body(alpha) if endpoint.body else None)
    error = assert_error_shape(response, 403)
    assert endpoint.scope in error["message"]


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.make], ids=[e.name for e in ENDPOINTS if e.make])
def test_it_shows_a_foreign_tenant_nothing(endpoint, alpha, beta, api):
    params = endpoint.make(alpha)
    body = endpoint.body(alpha) if endpoint.body else None
    response = _call(api(beta.keys["all"]), endpoint, params, body)
    if endpoint.list_ids:
        assert response.status_code == 200
        assert params["id"] not in endpoint.list_ids(response.json())
    else:
        assert_error_shape(response, 404)
    owner_view = _call(api(alpha.keys["all"]), endpoint, params, body)
    assert owner_view.status_code == endpoint.ok_status  # and it was still there for its owner


BAD = [(e, i) for e in ENDPOINTS for i in range(len(e.invalid_bodies))]


@pytest.mark.parametrize("endpoint,index", BAD, ids=[f"{e.name}-{i}" for e, i in BAD])
def test_it_rejects_bad_input_with_the_error_shape(endpoint, index, alpha, api):
    params = endpoint.make(alpha) if endpoint.make else None
    response = _call(api(alpha.keys["all"]), endpoint, params, endpoint.invalid_bodies[index])
    assert_error_shape(response, 400)
