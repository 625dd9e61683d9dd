from django.urls import path

from . import views

urlpatterns = [
    path("lineage", views.LineageView.as_view(), name="provenance-lineage"),
    path("lineage/export", views.ExportView.as_view(), name="provenance-export"),
    path("lineage/path", views.PathView.as_view(), name="provenance-path"),
    path("atoms/<str:ref>/impact", views.ImpactView.as_view(), name="provenance-impact"),
    path("atoms/<str:ref>/retract", views.RetractView.as_view(), name="provenance-retract"),
]
