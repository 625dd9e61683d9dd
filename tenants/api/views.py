from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.selectors import credit_balance
from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound

from ..models import SCOPES, ApiKey
from ..selectors import api_keys_of
from ..services import api_key_create, api_key_revoke


class ApiKeyOutput(serializers.ModelSerializer):
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at", "is_active"]


class ApiKeyCreatedOutput(ApiKeyOutput):
    key = serializers.CharField(help_text="The full key. Shown only in this response.")

    class Meta(ApiKeyOutput.Meta):
        fields = ApiKeyOutput.Meta.fields + ["key"]


class ApiKeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=SCOPES), min_length=1, max_length=4)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class TenantOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    credit_balance = serializers.CharField()
    policy = serializers.DictField()


class TenantView(TenantAPIView):
    @extend_schema(responses=TenantOutput, summary="The caller's tenant, scopes, balance and policy")
    def get(self, request):
        policy = self.principal.policy
        data = {
            "slug": self.tenant.schema_name,
            "name": self.tenant.name,
            "scopes": sorted(self.principal.scopes),
            "credit_balance": str(credit_balance(tenant=self.tenant)),
            "policy": {
                "requests_per_minute": policy.requests_per_minute,
                "requests_per_minute_per_key": policy.requests_per_minute_per_key,
                "max_atoms": policy.max_atoms,
                "max_bytes": policy.max_bytes,
                "max_tokens_per_day": policy.max_tokens_per_day,
            } if policy else {},
        }
        return Response(TenantOutput(data).data)


class ApiKeyListView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(responses=ApiKeyOutput(many=True), summary="List the tenant's API keys")
    def get(self, request):
        return self.paginate(api_keys_of(tenant=self.tenant), ApiKeyOutput, CreatedCursorPagination)

    @extend_schema(request=ApiKeyInput, responses={201: ApiKeyCreatedOutput}, summary="Create an API key")
    def post(self, request):
        data = self.validated(ApiKeyInput, request.data)
        key, raw = api_key_create(tenant=self.tenant, **data)
        key.key = raw
        return Response(ApiKeyCreatedOutput(key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(TenantAPIView):
    required_scope = "admin"

    def _key(self, key_id: int) -> ApiKey:
        key = api_keys_of(tenant=self.tenant).filter(pk=key_id).first()
        if key is None:
            raise NotFound("No such API key.")
        return key

    @extend_schema(responses=ApiKeyOutput, summary="One API key")
    def get(self, request, key_id: int):
        return Response(ApiKeyOutput(self._key(key_id)).data)

    @extend_schema(responses=ApiKeyOutput, summary="Revoke an API key")
    def delete(self, request, key_id: int):
        return Response(ApiKeyOutput(api_key_revoke(tenant=self.tenant, key_id=key_id)).data)
