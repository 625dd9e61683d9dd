from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound

from ..selectors import LIVE, concept_bindings, concept_by_id, concept_members, concepts_list
from . import serializers as s


class ConceptListView(TenantAPIView):
    @extend_schema(parameters=[OpenApiParameter(n, str) for n in ("modality", "model", "state", "min_size", "label",
                                                                   "cursor", "limit")],
                   responses=s.ConceptOutput(many=True), summary="List concepts (live ones unless ?state=)")
    def get(self, request):
        query = self.validated(s.ListQuery, request.query_params)
        qs = concepts_list(modality=query.get("modality"), model=query.get("model"),
                           states=query.get("state") or LIVE, min_size=query.get("min_size", 0),
                           label=query.get("label"))
        return self.paginate(qs, s.ConceptOutput, CreatedCursorPagination)


class ConceptDetailView(TenantAPIView):
    @extend_schema(parameters=[OpenApiParameter("members", int)], responses=s.ConceptDetailOutput,
                   summary="One concept with its members (nearest first), bindings and history")
    def get(self, request, concept_id: int):
        query = self.validated(s.DetailQuery, request.query_params)
        concept = concept_by_id(concept_id=concept_id)
        if concept is None:
            raise NotFound("No such concept.", details={"concept": concept_id})
        members = [s.member_row(a, d) for a, d in concept_members(concept=concept, limit=query["members"])]
        context = {"members": members, "bindings": concept_bindings(concept=concept)}
        return Response(s.ConceptDetailOutput(concept, context=context).data)
