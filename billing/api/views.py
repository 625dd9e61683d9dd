from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView

from ..models import UsageEvent
from ..selectors import credit_balance, usage_events, usage_totals


class UsageEventOutput(serializers.ModelSerializer):
    class Meta:
        model = UsageEvent
        fields = ["id", "meter", "quantity", "credits", "idempotency_key", "correlation_id", "attributes", "created_at"]


class BalanceOutput(serializers.Serializer):
    balance = serializers.CharField()
    usage = serializers.DictField()


class UsageQuery(serializers.Serializer):
    meter = serializers.CharField(required=False, max_length=64)


class BalanceView(TenantAPIView):
    @extend_schema(responses=BalanceOutput, summary="Credit balance and usage totals per meter")
    def get(self, request):
        return Response({"balance": str(credit_balance(tenant=self.tenant)), "usage": usage_totals(tenant=self.tenant)})


class UsageListView(TenantAPIView):
    @extend_schema(
        parameters=[OpenApiParameter("meter", str), OpenApiParameter("limit", int)],
        responses=UsageEventOutput(many=True), summary="The tenant's usage ledger",
    )
    def get(self, request):
        query = self.validated(UsageQuery, request.query_params)
        events = usage_events(tenant=self.tenant, meter=query.get("meter"))
        return self.paginate(events, UsageEventOutput, CreatedCursorPagination)
