from django.urls import path

from . import views

urlpatterns = [
    path("atoms", views.AtomListView.as_view(), name="atom-list"),
    path("atoms/<str:ref>", views.AtomDetailView.as_view(), name="atom-detail"),
    path("atoms/<str:ref>/content", views.AtomContentView.as_view(), name="atom-content"),
    path("search/semantic", views.SemanticSearchView.as_view(), name="search-semantic"),
]
