from tests.api_matrix import Endpoint


def _make_key(owner):
    from tenants.services import api_key_create

    key, _ = api_key_create(tenant=owner.tenant, name="matrix", scopes=["read"])
    return {"id": key.pk}


def _ids(body):
    return [row["id"] for row in body["results"]]


ENDPOINTS = [
    Endpoint("tenant", "get", "/api/tenant", "read"),
    Endpoint("key-list", "get", "/api/keys", "admin", make=_make_key, list_ids=_ids),
    Endpoint("key-create", "post", "/api/keys", "admin", body=lambda o: {"name": "k", "scopes": ["read"]},
             invalid_bodies=[{}, {"name": "k", "scopes": []}, {"name": "k", "scopes": ["root"]},
                             {"name": "", "scopes": ["read"]}, {"name": "k", "scopes": "read"},
                             {"name": "k", "scopes": ["read"], "expires_at": "yesterday"}],
             ok_status=201),
    Endpoint("key-get", "get", "/api/keys/{id}", "admin", make=_make_key),
    Endpoint("key-revoke", "delete", "/api/keys/{id}", "admin", make=_make_key),
]
