from django.urls import path

from . import views

urlpatterns = [
    path("concepts", views.ConceptListView.as_view(), name="concept-list"),
    path("concepts/<int:concept_id>", views.ConceptDetailView.as_view(), name="concept-detail"),
]
