from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound, ValidationFailed

from ..models import Model, ModelJob
from ..readers import check_import_path
from ..selectors import models_list
from ..services import model_ingest, model_ingest_carrier, model_lineage_add, model_predict
from ..tasks import model_job_enqueue
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


def _decoder(model: Model, what: str) -> Model:
    if model.architecture != "llama":
        raise ValidationFailed(f"{what} needs a decoder model.", details={"model": model.pk})
    return model


class KnnBuildView(TenantAPIView):
    required_scope = "write"

    @extend_schema(request=s.KnnBuildInput, responses={202: s.ModelJobOutput},
                   summary="Build the model's kNN-LM datastore over the tenant's text atoms (in a worker)")
    def post(self, request, pk: int):
        data = self.validated(s.KnnBuildInput, request.data)
        model = _decoder(_model(pk), "A kNN-LM datastore")
        job = model_job_enqueue(tenant=self.tenant, kind="knn", model=model, params=data)
        return Response(s.ModelJobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class StudentView(TenantAPIView):
    required_scope = "write"

    @extend_schema(request=s.StudentInput, responses={202: s.ModelJobOutput},
                   summary="Derive a smaller student model (drop the least important layers) in a worker")
    def post(self, request, pk: int):
        data = self.validated(s.StudentInput, request.data)
        model = _decoder(_model(pk), "Student extraction")
        layers = int(model.hyperparameters.get("block_count") or 0)
        if layers and data["drop"] >= layers:
            raise ValidationFailed(f"drop must be below the model's {layers} layers.", details={"drop": data["drop"]})
        job = model_job_enqueue(tenant=self.tenant, kind="student", model=model, params=data)
        return Response(s.ModelJobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ModelJobView(TenantAPIView):
    @extend_schema(responses=s.ModelJobOutput, summary="A queued model job: state, result or error")
    def get(self, request, task_id: str):
        job = ModelJob.objects.filter(task_id=task_id).first()
        if job is None:
            raise NotFound("No such job.", details={"job": task_id})
        return Response(s.ModelJobOutput(job).data)


class LineageView(TenantAPIView):
    required_scope = "admin"

    @extend_schema(request=s.LineageInput, responses={201: s.LineageOutput, 200: s.LineageOutput},
                   summary="Record that this model descends from another (quantized/fine-tuned from, student of)")
    def post(self, request, pk: int):
        data = self.validated(s.LineageInput, request.data)
        child = _model(pk)
        parent = Model.objects.filter(pk=data["parent"]).first()
        if parent is None:
            raise ValidationFailed("No such parent model.", details={"parent": data["parent"]})
        existed = child.parents.filter(parent=parent, relation=data["relation"]).exists()
        edge = model_lineage_add(tenant=self.tenant, child=child, parent=parent, relation=data["relation"],
                                 metadata=data.get("metadata"))
        return Response(s.LineageOutput(edge).data, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)
