"""Admin endpoints of the improvement loop (admin scope throughout)."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound

from ..selectors import approval_exists, approvals_pending, run_detail, runs_list
from ..services import approval_decide, run_create
from . import serializers as s


class TriggerView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(request=s.TriggerInput, responses={202: s.RunOutput}, summary="Queue an improvement run")
    def post(self, request):
        data = self.validated(s.TriggerInput, request.data)
        run = run_create(tenant=self.tenant, trigger="api", dry_run=data["dry_run"], actions=data["actions"])
        return Response(s.RunOutput(run).data, status=status.HTTP_202_ACCEPTED)


class RunListView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(parameters=[OpenApiParameter("state", str), OpenApiParameter("cursor", str)],
                   responses=s.RunOutput(many=True), summary="Improvement runs, newest first")
    def get(self, request):
        state = request.query_params.get("state") or None
        return self.paginate(runs_list(state=state), s.RunOutput, CreatedCursorPagination)


class RunDetailView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(responses=s.RunDetailOutput, summary="One run with its signals and actions")
    def get(self, request, run_id: int):
        run = run_detail(run_id=run_id)
        if run is None:
            raise NotFound("No such run.", details={"run": run_id})
        return Response(s.RunDetailOutput(run).data)


class ApprovalListView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(responses=s.ApprovalOutput(many=True), summary="Pending approvals")
    def get(self, request):
        return self.paginate(approvals_pending(), s.ApprovalOutput, CreatedCursorPagination)


class ApprovalDecisionView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(request=s.DecisionInput, responses=s.ApprovalOutput, summary="Approve or reject a waiting action")
    def post(self, request, approval_id: int):
        if not approval_exists(approval_id=approval_id):  # a foreign or unknown id: 404 before anything else
            raise NotFound("No such approval.", details={"approval": approval_id})
        data = self.validated(s.DecisionInput, request.data)
        approval = approval_decide(tenant=self.tenant, approval_id=approval_id, decision=data["decision"],
                                   note=data["note"], actor=str(self.principal))
        return Response(s.ApprovalOutput(approval).data)
