"""The generic API test matrix (after NetBox): every endpoint registers here once and gets the same
checks: authentication required, the right scope, a foreign tenant sees nothing, bad input gets the
error shape. Apps register by listing Endpoint objects in `<app>/tests/api_endpoints.py`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

APPS = ("tenants", "billing", "atoms", "inference", "concepts", "autonomy", "provenance")


@dataclass
class Endpoint:
    name: str
    method: str  # get | post | patch | put | delete
    path: str  # may hold {id}, filled by make()
    scope: str
    make: Callable | None = None  # (TenantKeys) -> dict of path parameters for an object the tenant owns
    body: Callable | None = None  # (TenantKeys) -> a valid request body
    invalid_bodies: list = field(default_factory=list)
    list_ids: Callable | None = None  # (response json) -> ids listed, for list endpoints
    ok_status: int = 200

    def url(self, params: dict | None) -> str:
        return self.path.format(**(params or {}))


def all_endpoints() -> list[Endpoint]:
    endpoints = []
    for app in APPS:
        try:
            module = importlib.import_module(f"{app}.tests.api_endpoints")
        except ModuleNotFoundError:
            continue
        endpoints.extend(module.ENDPOINTS)
    return endpoints


def assert_error_shape(response, status: int | None = None) -> dict:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    error = body["error"]
    assert set(error) == {"code", "message", "details", "correlation_id"}, body
    assert error["code"] and error["message"]
    assert error["correlation_id"] == response["X-Correlation-ID"]
    return error
