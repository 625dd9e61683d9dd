from django.urls import path

from . import views

urlpatterns = [
    path("billing/balance", views.BalanceView.as_view(), name="billing-balance"),
    path("billing/usage", views.UsageListView.as_view(), name="billing-usage"),
]
