from django.urls import path

from . import views

urlpatterns = [
    path("admin/autonomous/trigger", views.TriggerView.as_view(), name="autonomy-trigger"),
    path("admin/autonomous/runs", views.RunListView.as_view(), name="autonomy-runs"),
    path("admin/autonomous/runs/<int:run_id>", views.RunDetailView.as_view(), name="autonomy-run"),
    path("admin/autonomous/approvals", views.ApprovalListView.as_view(), name="autonomy-approvals"),
    path("admin/autonomous/approvals/<int:approval_id>", views.ApprovalDecisionView.as_view(),
         name="autonomy-approval"),
]
