from django.urls import path

from . import views

urlpatterns = [
    path("tenant", views.TenantView.as_view(), name="tenant"),
    path("keys", views.ApiKeyListView.as_view(), name="apikey-list"),
    path("keys/<int:key_id>", views.ApiKeyDetailView.as_view(), name="apikey-detail"),
]
