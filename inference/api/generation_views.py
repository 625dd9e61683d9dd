"""Generation over HTTP: `POST /api/generate` (JSON or Server-Sent Events), the AtomicStream reads
(`/api/generations...`, `/api/atoms/{ref}/generations`) and the OpenAI-compatible `/v1/chat/completions`.

Every check that can fail (the body, the credits, the model, the prompt against the context window) runs
before a streaming response starts, so a bad request always gets a plain error response and opens no run.
"""
from __future__ import annotations

import json
import time

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from atoms.selectors import atom_by_ref
from billing.services import require_credits
from hartonomous.api.pagination import CreatedCursorPagination
from hartonomous.api.views import TenantAPIView
from hartonomous.errors import NotFound
from provenance.models import GenerationRun
from provenance.selectors import generations_for_atom

from ..generation import generation_start
from ..models import Model
from ..replay import generation_replay
from ..selectors import model_by_ref
from . import generation_serializers as s
from .sse import sse, streaming_response

# how our finish reasons read to an OpenAI client: a natural end is "stop"; anything that cut the text
# short (the token limit, exhausted credits, a disconnect, an error) is "length"
OPENAI_FINISH = {"stop": "stop", "eos": "stop", "length": "length", "credits": "length",
                 "disconnected": "length", "error": "length"}


def principal_label(user) -> str:
    return f"{user.kind}:{user.subject}"


def generator_model(ref) -> Model:
    """A model by id (int or digit string) or, failing that, by name (the newest of that name)."""
    model = model_by_ref(ref)
    if model is None:
        raise NotFound("No such model.", details={"model": ref}, code="model_not_found")
    return model


def generation_run(pk: int) -> GenerationRun:
    run = GenerationRun.objects.filter(pk=pk).first()
    if run is None:
        raise NotFound("No such generation.", details={"generation": pk})
    return run


def collect(stream) -> dict:
    """Drain a stream into the non-streaming answer."""
    ranks = {}
    done = None
    for event in stream:
        if event["type"] == "run":
            ranks = {src["atom"]: src for src in event["sources"]}
        elif event["type"] == "done":
            done = event
    sources = [{"atom": src["atom"], "rank": ranks[src["atom"]]["rank"], "score": ranks[src["atom"]]["score"],
                "mass_total": src["mass_total"], "top_steps": src["top_steps"]} for src in done["sources"]]
    run = stream.run
    return {"run": run.pk, "model": run.model_id, "model_digest": run.model_digest, "seed": run.seed,
            "text": done["text"], "tokens": done["tokens"], "finish_reason": done["finish_reason"],
            "usage": done["usage"], "sources": sources, "ttft_ms": done["ttft_ms"],
            "duration_ms": done["duration_ms"], "tokens_per_s": done["tokens_per_s"]}


class SSERenderer:
    """`event: run|token|done|error` + `data: <json>` per event."""

    def event(self, event: dict) -> bytes:
        return sse(json.dumps(event), event["type"])

    def error(self, body: dict) -> bytes:
        return sse(json.dumps(body), "error")

    def end(self) -> bytes:
        return b""


class GenerateView(TenantAPIView):
    required_scope = "generate"

    @extend_schema(
        request=s.GenerateInput,
        responses={200: OpenApiResponse(s.GenerateOutput, description="JSON when stream is false; with stream "
                                        "true, text/event-stream of `event: run|token|done` (`error` if the "
                                        "generation fails after it started), `data: <json>`")},
        summary="Generate with attention over the tenant's atoms; every token attributed to its sources")
    def post(self, request):
        data = self.validated(s.GenerateInput, request.data)
        require_credits(tenant=self.tenant)
        spec = s.generation_spec(data, model=generator_model(data["model"]))
        stream = generation_start(tenant=self.tenant, spec=spec, principal=principal_label(request.user))
        if data["stream"]:
            return streaming_response(request, stream, tenant=self.tenant, renderer=SSERenderer())
        return Response(s.GenerateOutput(collect(stream)).data)


class GenerationListView(TenantAPIView):
    @extend_schema(parameters=[OpenApiParameter(n, str) for n in ("status", "model", "cursor", "limit")],
                   responses=s.GenerationRunOutput(many=True), summary="Generation runs, newest first (cursor pagination)")
    def get(self, request):
        query = self.validated(s.GenerationRunQuery, request.query_params)
        runs = GenerationRun.objects.all()
        if "status" in query:
            runs = runs.filter(status=query["status"])
        if "model" in query:
            runs = runs.filter(model_id=query["model"])
        return self.paginate(runs, s.GenerationRunOutput, CreatedCursorPagination)


class GenerationDetailView(TenantAPIView):
    @extend_schema(responses=s.GenerationRunDetailOutput,
                   summary="A generation run with its sources and every step's alternatives and attributions")
    def get(self, request, pk: int):
        return Response(s.GenerationRunDetailOutput(generation_run(pk)).data)


class GenerationReplayView(TenantAPIView):
    required_scope = "generate"

    @extend_schema(request=None, responses={201: s.GenerationReplayOutput},
                   summary="Replay a run against the atom store as it was; the replay is a new run (409 while "
                           "running, 422 when its model or sources changed)")
    def post(self, request, pk: int):
        report = generation_replay(tenant=self.tenant, run=generation_run(pk), principal=principal_label(request.user))
        body = {**report.as_dict(), "replay_run": report.replay}
        return Response(s.GenerationReplayOutput(body).data, status=status.HTTP_201_CREATED)


class AtomGenerationsView(TenantAPIView):
    @extend_schema(parameters=[OpenApiParameter("steps_per_run", int)], responses=s.AtomGenerationsOutput,
                   summary="Retraction impact on the AtomicStream: the runs and steps that drew on this atom")
    def get(self, request, ref: str):
        query = self.validated(s.AtomGenerationsQuery, request.query_params)
        atom = atom_by_ref(ref=ref, include_deleted=True)
        if atom is None:
            raise NotFound("No such atom.", details={"atom": ref})
        runs = generations_for_atom(atom_id=atom.pk, steps_per_run=query["steps_per_run"])
        body = {"atom": atom.pk, "runs": runs, "total_runs": len(runs),
                "total_steps_credited": sum(r["steps_credited"] for r in runs),
                "total_mass": sum(r["mass_total"] for r in runs)}
        return Response(s.AtomGenerationsOutput(body).data)


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible
# --------------------------------------------------------------------------------------------------
def _extension(done: dict, sources: dict) -> dict:
    return {"run": done["run"], "finish_reason": done["finish_reason"],
            "sources": [{**src, "rank": sources[src["atom"]]["rank"], "score": sources[src["atom"]]["score"]}
                        for src in done["sources"]],
            "ttft_ms": done["ttft_ms"], "duration_ms": done["duration_ms"]}


class ChatChunkRenderer:
    """`data: {chat.completion.chunk}` per token, then the finish chunk, an optional usage chunk and
    `data: [DONE]`. Each token's chunk carries its attributions under `hartonomous`."""

    def __init__(self, model: Model, include_usage: bool):
        self.model, self.include_usage = model.name, include_usage
        self.created = int(time.time())
        self.id, self.sources = "chatcmpl-pending", {}

    def _chunk(self, delta: dict, finish_reason=None, **extra) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}
        return sse(json.dumps(body))

    def event(self, event: dict) -> bytes:
        kind = event["type"]
        if kind == "run":
            self.id = f"chatcmpl-{event['run']}"
            self.sources = {src["atom"]: src for src in event["sources"]}
            return self._chunk({"role": "assistant", "content": ""}, hartonomous={"run": event["run"]})
        if kind == "token":
            return self._chunk({"content": event["text"]}, hartonomous={
                "position": event["position"], "token": event["token"], "logprob": event["logprob"],
                "attributions": event["attributions"]})
        out = self._chunk({}, OPENAI_FINISH.get(event["finish_reason"], "stop"),
                          hartonomous=_extension(event, self.sources))
        if self.include_usage:
            out += sse(json.dumps({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                   "model": self.model, "choices": [], "usage": event["usage"]}))
        return out

    def error(self, body: dict) -> bytes:
        return sse(json.dumps(body))

    def end(self) -> bytes:
        return sse("[DONE]")


class ChatCompletionsView(TenantAPIView):
    required_scope = "generate"

    @extend_schema(request=s.ChatCompletionInput, responses={200: dict},
                   summary="OpenAI-compatible chat completions (stream and non-stream) over the tenant's atoms")
    def post(self, request):
        data = self.validated(s.ChatCompletionInput, request.data)
        require_credits(tenant=self.tenant)
        model = generator_model(data["model"])
        stream = generation_start(tenant=self.tenant, spec=s.chat_spec(data, model=model),
                                  principal=principal_label(request.user))
        if data["stream"]:
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            return streaming_response(request, stream, tenant=self.tenant,
                                      renderer=ChatChunkRenderer(model, include_usage))
        return Response(self._completion(stream, model))

    @staticmethod
    def _completion(stream, model: Model) -> dict:
        events = list(stream)
        sources = {src["atom"]: src for src in events[0]["sources"]}
        done = events[-1]
        return {"id": f"chatcmpl-{done['run']}", "object": "chat.completion", "created": int(time.time()),
                "model": model.name, "system_fingerprint": model.root.sha256[:16],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done["text"]},
                             "finish_reason": OPENAI_FINISH.get(done["finish_reason"], "stop"), "logprobs": None}],
                "usage": done["usage"], "hartonomous": _extension(done, sources)}


class OpenAIModelListView(TenantAPIView):
    @extend_schema(responses={200: dict}, summary="OpenAI-compatible list of the tenant's text-generation models")
    def get(self, request):
        models = Model.objects.filter(architecture="llama").order_by("-created_at", "-id")[:500]
        return Response({"object": "list", "data": [
            {"id": str(m.pk), "object": "model", "created": int(m.created_at.timestamp()),
             "owned_by": self.tenant.schema_name, "name": m.name} for m in models]})
