from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound, ValidationFailed

from ..models import Model
from ..readers import check_import_path
from ..selectors import models_list
from ..services import model_ingest, model_ingest_carrier, model_predict
from ..tasks import knn_build_enqueue
from . import serializers as s


def _model(pk: int) -> Model:
    model = Model.objects.select_related("root", "tokenizer").filter(pk=pk).first()
    if model is None:
        raise NotFound("No such model.", details={"model": pk})
    return model


class ModelListView(TenantAPIView):
    required_scopes = {"POST": "admin"}

    @extend_schema(parameters=[OpenApiParameter("cursor", str)], responses=s.ModelOutput(many=True),
                   summary="List ingested models (newest first)")
    def get(self, request):
        return self.paginate(models_list(), s.ModelOutput, CreatedCursorPagination)

    @extend_schema(request=s.IngestInput, responses={201: s.IngestOutput, 200: s.IngestOutput},
                   summary="Ingest a model (server-side path or carrier package) into tensor atoms; admin only")
    def post(self, request):
        data = self.validated(s.IngestInput, request.data)
        if "carrier" in data:
            result = model_ingest_carrier(tenant=self.tenant, carrier=data["carrier"], name=data.get("name"))
        else:
            check_import_path(data["path"], settings.MODEL_IMPORT_ROOTS)
            result = model_ingest(tenant=self.tenant, path=data["path"], name=data.get("name"))
        body = s.IngestOutput({"model": result.model, "created": result.created, "new_bytes": result.new_bytes}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class ModelDetailView(TenantAPIView):
    @extend_schema(responses=s.ModelDetailOutput, summary="One model: tensors, sizes, dedup savings, lineage")
    def get(self, request, pk: int):
        return Response(s.ModelDetailOutput(_model(pk)).data)


class PredictView(TenantAPIView):
    required_scope = "generate"

    @extend_schema(request=s.PredictInput, responses=s.PredictOutput,
                   summary="Embeddings, next-token distribution, scores or a completion from a model's atoms")
    def post(self, request):
        data = self.validated(s.PredictInput, request.data)
        result = model_predict(tenant=self.tenant, model=_model(data["model"]), kind=data["kind"],
                               text=data.get("text"), texts=data.get("texts"), top=data["top"],
                               sampling=s.PredictInput.sampling(data))
        return Response(result.body)


class KnnBuildView(TenantAPIView):
    required_scope = "write"

    @extend_schema(request=s.KnnBuildInput, responses={202: s.KnnBuildOutput},
                   summary="Build the model's kNN-LM datastore over the tenant's text atoms (in a worker)")
    def post(self, request, pk: int):
        data = self.validated(s.KnnBuildInput, request.data)
        model = _model(pk)
        if model.architecture != "llama":
            raise ValidationFailed("A kNN-LM datastore needs a decoder model.", details={"model": model.pk})
        task_id = knn_build_enqueue(tenant=self.tenant, model=model, **data)
        return Response({"model": model.pk, "task": task_id, "status": "queued"}, status=status.HTTP_202_ACCEPTED)
