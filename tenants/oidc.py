"""OIDC bearer tokens: RS256/ES256 validated against a configured JWKS (file or URL, cached)."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import jwt
from django.conf import settings

ALGORITHMS = ["RS256", "ES256"]


class TokenInvalid(Exception):
    pass


class _JwksCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKSet | None = None
        self._source = ""
        self._loaded_at = 0.0

    def _source_name(self) -> str:
        return settings.OIDC_JWKS_FILE or settings.OIDC_JWKS_URL

    def _fetch(self) -> dict:
        if settings.OIDC_JWKS_FILE:
            return json.loads(Path(settings.OIDC_JWKS_FILE).read_text())
        with urllib.request.urlopen(settings.OIDC_JWKS_URL, timeout=5) as response:  # noqa: S310
            return json.loads(response.read())

    def keys(self, *, force: bool = False) -> jwt.PyJWKSet:
        source = self._source_name()
        if not source:
            raise TokenInvalid("OIDC is not configured on this server")
        with self._lock:
            stale = time.monotonic() - self._loaded_at > settings.OIDC_JWKS_CACHE_SECONDS
            if force or self._keys is None or stale or source != self._source:
                try:
                    self._keys = jwt.PyJWKSet.from_dict(self._fetch())
                except (OSError, ValueError, jwt.PyJWTError) as exc:
                    raise TokenInvalid(f"JWKS could not be loaded: {exc}") from exc
                self._source, self._loaded_at = source, time.monotonic()
            return self._keys

    def key_for(self, kid: str | None):
        for attempt in (False, True):  # refetch once on an unknown kid (key rotation)
            keys = self.keys(force=attempt)
            for key in keys.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise TokenInvalid("The token's signing key is not in the JWKS")


jwks = _JwksCache()


def decode(token: str) -> dict:
    """Validate signature, issuer, audience, expiry (with leeway) and return the claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenInvalid(f"Malformed token: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise TokenInvalid(f"Algorithm {header.get('alg')!r} is not accepted")
    key = jwks.key_for(header.get("kid"))
    options = {"require": ["exp", "iat", "sub"]}
    try:
        return jwt.decode(
            token, key=key.key, algorithms=ALGORITHMS,
            audience=settings.OIDC_AUDIENCE or None, issuer=settings.OIDC_ISSUER or None,
            leeway=settings.OIDC_LEEWAY_SECONDS, options=options,
        )
    except jwt.PyJWTError as exc:
        raise TokenInvalid(str(exc)) from exc


def scopes_from_claims(claims: dict) -> frozenset[str]:
    raw = claims.get(settings.OIDC_SCOPE_CLAIM) or claims.get("scp") or ""
    items = raw.split() if isinstance(raw, str) else list(raw)
    return frozenset(item.removeprefix("hartonomous:") for item in items)
