from django.urls import path

from . import generation_views as g
from . import views

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="model-list"),
    path("models/predict", views.PredictView.as_view(), name="model-predict"),
    path("models/<int:pk>", views.ModelDetailView.as_view(), name="model-detail"),
    path("models/<int:pk>/knn", views.KnnBuildView.as_view(), name="model-knn"),
    path("models/<int:pk>/students", views.StudentView.as_view(), name="model-students"),
    path("models/<int:pk>/lineage", views.LineageView.as_view(), name="model-lineage"),
    path("models/jobs/<str:task_id>", views.ModelJobView.as_view(), name="model-job"),
    path("generate", g.GenerateView.as_view(), name="generate"),
    path("generations", g.GenerationListView.as_view(), name="generation-list"),
    path("generations/<int:pk>", g.GenerationDetailView.as_view(), name="generation-detail"),
    path("generations/<int:pk>/replay", g.GenerationReplayView.as_view(), name="generation-replay"),
    # beside provenance's atoms/<ref>/impact: the same retraction question, asked of the AtomicStream
    path("atoms/<str:ref>/generations", g.AtomGenerationsView.as_view(), name="atom-generations"),
]
