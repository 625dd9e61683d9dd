"""API keys and OIDC bearer tokens, against the real database and real key pairs."""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.test import override_settings
from django.utils import timezone

from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_revoke, hash_key
from tests.api_matrix import assert_error_shape

pytestmark = pytest.mark.django_db


def test_it_stores_only_a_hash_and_shows_the_key_once(alpha, api):
    response = api(alpha.keys["all"]).post("/api/keys", {"name": "ci", "scopes": ["read"]})
    assert response.status_code == 201
    raw = response.json()["key"]
    row = ApiKey.objects.get(pk=response.json()["id"])
    assert row.hashed_key == hash_key(raw) and raw not in row.hashed_key
    assert raw.startswith(f"hk_{row.prefix}_")
    listed = api(alpha.keys["all"]).get("/api/keys").json()["results"]
    assert all("key" not in item for item in listed)
    assert api(raw).get("/api/tenant").status_code == 200


def test_it_refuses_revoked_and_expired_keys(alpha, api):
    key, raw = api_key_create(tenant=alpha.tenant, name="short", scopes=["read"])
    assert api(raw).get("/api/tenant").status_code == 200
    api_key_revoke(tenant=alpha.tenant, key_id=key.pk)
    assert_error_shape(api(raw).get("/api/tenant"), 401)
    old, old_raw = api_key_create(tenant=alpha.tenant, name="old", scopes=["read"],
                                  expires_at=timezone.now() + timedelta(seconds=60))
    ApiKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error_shape(api(old_raw).get("/api/tenant"), 401)


def test_it_records_last_use(alpha, api):
    key, raw = api_key_create(tenant=alpha.tenant, name="touch", scopes=["read"])
    assert key.last_used_at is None
    api(raw).get("/api/tenant")
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_it_resolves_the_tenant_by_key_not_host(alpha, beta, api):
    for tenant in (alpha, beta):
        body = api(tenant.keys["read"]).get("/api/tenant", HTTP_HOST="localhost").json()
        assert body["slug"] == tenant.slug


def test_it_rejects_malformed_authorization(alpha, api):
    client = api(None)
    for header in ("Basic abc", "Bearer", "Bearer not-a-key", "Bearer a.b.c"):
        response = client.get("/api/tenant", HTTP_AUTHORIZATION=header)
        assert_error_shape(response, 401)


def test_it_keeps_the_principal_in_history(alpha, api):
    response = api(alpha.keys["all"]).post("/api/keys", {"name": "audited", "scopes": ["read"]})
    record = ApiKey.history.filter(id=response.json()["id"]).first()
    assert record.history_change_reason.startswith("api_key:")



def _columns_of(row) -> list:
    return [getattr(row, f.attname) for f in type(row)._meta.concrete_fields]


def test_it_loads_a_key_with_its_tenant_and_policy_as_the_orm_does(alpha, beta):
    from tenants.models import TenantSecurityPolicy
    from tenants.selectors import api_key_by_hash

    key, raw = api_key_create(tenant=alpha.tenant, name="lookup", scopes=["write", "read"])
    found = api_key_by_hash(hashed_key=hash_key(raw))
    orm = ApiKey.objects.select_related("tenant", "tenant__policy").get(pk=key.pk)
    for ours, theirs in ((found, orm), (found.tenant, orm.tenant), (found.tenant.policy, orm.tenant.policy)):
        assert _columns_of(ours) == _columns_of(theirs) and not ours._state.adding
    assert found.scopes == ["read", "write"] and isinstance(found.tenant.policy.allowed_executors, list)
    assert found.tenant.schema_name == alpha.slug != beta.slug
    assert api_key_by_hash(hashed_key=hash_key(raw + "x")) is None
    TenantSecurityPolicy.objects.filter(tenant=alpha.tenant).delete()  # rolled back after the test
    assert getattr(api_key_by_hash(hashed_key=hash_key(raw)).tenant, "policy", None) is None


# ---------------------------------------------------------------- OIDC
@pytest.fixture(scope="module")
def signing_keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
    }


def _jwks(signing_keys) -> dict:
    keys = []
    for kid, private in signing_keys.items():
        algorithm = jwt.algorithms.RSAAlgorithm if kid == "rsa" else jwt.algorithms.ECAlgorithm
        jwk = json.loads(algorithm.to_jwk(private.public_key()))
        jwk.update({"kid": kid, "use": "sig"})
        keys.append(jwk)
    return {"keys": keys}


ISSUER, AUDIENCE = "https://issuer.test/", "hartonomous-api"


def _token(signing_keys, kid="rsa", **claims) -> str:
    now = int(time.time())
    payload = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300,
               "tenant": "alpha", "scope": "read write"} | claims
    algorithm = "RS256" if kid == "rsa" else "ES256"
    return jwt.encode(payload, signing_keys[kid], algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def jwks_file(signing_keys, tmp_path):
    path = tmp_path / f"jwks-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(_jwks(signing_keys)))
    with override_settings(OIDC_JWKS_FILE=str(path), OIDC_JWKS_URL="", OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE):
        yield path


@pytest.mark.parametrize("kid", ["rsa", "ec"])
def test_it_accepts_a_valid_token(kid, signing_keys, jwks_file, alpha, api):
    response = api(_token(signing_keys, kid)).get("/api/tenant")
    assert response.status_code == 200, response.content
    assert response.json()["slug"] == "alpha"
    assert response.json()["scopes"] == ["read", "write"]


@pytest.mark.parametrize("claims", [
    {"aud": "someone-else"}, {"iss": "https://evil.test/"}, {"exp": int(time.time()) - 3600},
    {"tenant": "no_such_tenant"}, {"tenant": None},
])
def test_it_rejects_invalid_tokens(claims, signing_keys, jwks_file, alpha, api):
    assert_error_shape(api(_token(signing_keys, **claims)).get("/api/tenant"), 401)


def test_it_rejects_a_token_signed_by_an_unknown_key(jwks_file, alpha, api):
    stranger = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    assert_error_shape(api(_token(stranger)).get("/api/tenant"), 401)


def test_it_rejects_unsigned_tokens(jwks_file, alpha, api):
    token = jwt.encode({"sub": "x", "tenant": "alpha", "exp": int(time.time()) + 60}, key=None, algorithm="none")
    assert_error_shape(api(token).get("/api/tenant"), 401)


def test_it_enforces_token_scopes(signing_keys, jwks_file, alpha, api):
    token = _token(signing_keys, scope="read")
    assert_error_shape(api(token).post("/api/keys", {"name": "x", "scopes": ["read"]}), 403)


def test_it_allows_clock_skew_within_leeway(signing_keys, jwks_file, alpha, api):
    token = _token(signing_keys, exp=int(time.time()) - 10)
    assert api(token).get("/api/tenant").status_code == 200


def test_it_fetches_the_jwks_from_a_url(signing_keys, alpha, api):
    body = json.dumps(_jwks(signing_keys)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks-{uuid.uuid4().hex}.json"
    try:
        with override_settings(OIDC_JWKS_FILE="", OIDC_JWKS_URL=url, OIDC_ISSUER=ISSUER, OIDC_AUDIENCE=AUDIENCE):
            assert api(_token(signing_keys, "ec")).get("/api/tenant").status_code == 200
    finally:
        server.shutdown()
