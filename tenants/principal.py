"""Who is calling: the tenant and scopes resolved from an API key or an OIDC token."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    tenant: object  # tenants.models.Tenant
    scopes: frozenset[str]
    kind: str  # "api_key" | "jwt"
    subject: str  # key prefix or the token's sub
    api_key_id: int | None = None
    policy: object | None = field(default=None, compare=False)

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.subject}@{self.tenant.schema_name}"
