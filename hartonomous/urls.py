from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import health
from .bench_views import BareView
from .views import api_not_found, home

api_patterns = [
    path("", include("tenants.api.urls")),
    path("", include("billing.api.urls")),
    path("", include("atoms.api.urls")),
    path("", include("inference.api.urls")),
    path("", include("concepts.api.urls")),
    path("", include("autonomy.api.urls")),
    path("", include("provenance.api.urls")),
]

urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include(api_patterns)),
    path("v1/", include("inference.api.openai_urls")),
    *([path("api/_bench/bare", BareView.as_view())] if settings.BENCH_ENDPOINTS else []),
    path("api/<path:rest>", api_not_found),
]

handler404 = "hartonomous.views.not_found"
handler500 = "hartonomous.views.server_error"
handler400 = "hartonomous.views.bad_request"
