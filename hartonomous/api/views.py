"""Shared API plumbing: the base view every endpoint derives from."""
from __future__ import annotations

from rest_framework import serializers
from rest_framework.views import APIView

from hartonomous.errors import ValidationFailed


class TenantAPIView(APIView):
    """A view acting for the authenticated principal's tenant."""

    @property
    def principal(self):
        return self.request.user

    @property
    def tenant(self):
        return self.request.user.tenant

    @staticmethod
    def validated(serializer_class: type[serializers.Serializer], data, **kwargs) -> dict:
        serializer = serializer_class(data=data, **kwargs)
        if not serializer.is_valid():
            raise ValidationFailed("The request is not valid.", details={"fields": serializer.errors})
        return serializer.validated_data

    def paginate(self, queryset, serializer_class, pagination_class):
        paginator = pagination_class()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)
