"""Input and output of the generation endpoints (`/api/generate`, `/api/generations...`) and of the
OpenAI-compatible `/v1/chat/completions`."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from provenance.models import GenerationRun, GenerationSource, GenerationStep, RunStatus

from ..generation import GENERATION_CONTEXT, MAX_MESSAGES, MAX_PROMPT_CHARS, GenerationSpec

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop")
SEED_MAX = 2**63 - 1


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}]})
class StopField(serializers.Field):
    """A stop string or a list of up to 16 non-empty stop strings (OpenAI accepts both)."""

    default_error_messages = {"invalid": "stop must be a non-empty string or a list of up to 16 non-empty strings."}

    def to_internal_value(self, data) -> list[str]:
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or len(items) > 16 or not all(isinstance(s, str) and s for s in items):
            self.fail("invalid")
        if any(len(s) > 200 or "\x00" in s for s in items):
            self.fail("invalid")
        return items

    def to_representation(self, value):
        return value


class SamplingInput(serializers.Serializer):
    """The sampling fields (ranges re-checked by the runtime's SamplingParams)."""
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=GENERATION_CONTEXT)
    temperature = serializers.FloatField(required=False, min_value=0.0, max_value=100.0)
    top_k = serializers.IntegerField(required=False, min_value=0, max_value=2**31)
    top_p = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    repetition_penalty = serializers.FloatField(required=False, min_value=0.0, max_value=100.0)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=SEED_MAX)
    stop = StopField(required=False, allow_null=True)

    def validate_top_p(self, value: float) -> float:
        if value <= 0.0:
            raise serializers.ValidationError("top_p must be in (0, 1].")
        return value

    def validate_repetition_penalty(self, value: float) -> float:
        if value <= 0.0:
            raise serializers.ValidationError("repetition_penalty must be in (0, 100].")
        return value

    @staticmethod
    def sampling(data: dict) -> dict:
        return {k: data[k] for k in SAMPLING_FIELDS if data.get(k) is not None}


class RetrievalInput(serializers.Serializer):
    k = serializers.IntegerField(default=4, min_value=0, max_value=32)
    context_budget = serializers.IntegerField(default=1024, min_value=0, max_value=GENERATION_CONTEXT)
    knn_lambda = serializers.FloatField(default=0.0, min_value=0.0, max_value=1.0)
    alternatives = serializers.IntegerField(default=5, min_value=0, max_value=20)
    metadata_filter = serializers.DictField(required=False, allow_null=True)

    def validate_metadata_filter(self, value: dict | None) -> dict | None:
        import json

        if value is not None and "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("metadata_filter may not hold NUL characters.")
        return value

    def validate_knn_lambda(self, value: float) -> float:
        if value >= 1.0:
            raise serializers.ValidationError("knn_lambda must be in [0, 1).")
        return value


def check_text(texts: list[str], field: str) -> None:
    """Empty or over-long input is refused here, before the model is even looked up."""
    if not any(t.strip() for t in texts):
        raise serializers.ValidationError({field: "The text is empty."})
    if sum(len(t) for t in texts) > MAX_PROMPT_CHARS:
        raise serializers.ValidationError({field: f"The text is longer than {MAX_PROMPT_CHARS} characters."})


class MessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)


class GenerateInput(SamplingInput, RetrievalInput):
    model = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    messages = MessageInput(many=True, required=False, max_length=MAX_MESSAGES)
    stream = serializers.BooleanField(default=False)

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({"unknown_fields": unknown})
        if ("prompt" in attrs) == ("messages" in attrs):
            raise serializers.ValidationError("Give exactly one of 'prompt' or 'messages'.")
        if "prompt" in attrs:
            check_text([attrs["prompt"]], "prompt")
        else:
            check_text([m["content"] for m in attrs["messages"]], "messages")
        return attrs


def generation_spec(data: dict, *, model) -> GenerationSpec:
    messages = [dict(m) for m in data["messages"]] if data.get("messages") is not None else None
    return GenerationSpec(model=model, prompt=data.get("prompt"), messages=messages, k=data["k"],
                          context_budget=data["context_budget"], sampling=SamplingInput.sampling(data),
                          knn_lambda=data["knn_lambda"], alternatives=data["alternatives"],
                          metadata_filter=data.get("metadata_filter") or None)


# --------------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------------
class GenerationUsageOutput(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class GeneratedSourceOutput(serializers.Serializer):
    atom = serializers.IntegerField()
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    mass_total = serializers.FloatField(help_text="Attention mass the generated tokens gave this atom, summed")
    top_steps = serializers.IntegerField(help_text="Tokens for which this atom was the top source")


class GenerateOutput(serializers.Serializer):
    run = serializers.IntegerField()
    model = serializers.IntegerField()
    model_digest = serializers.CharField()
    seed = serializers.IntegerField()
    text = serializers.CharField()
    tokens = serializers.ListField(child=serializers.IntegerField())
    finish_reason = serializers.CharField(help_text="stop | eos | length | credits")
    usage = GenerationUsageOutput()
    sources = GeneratedSourceOutput(many=True)
    ttft_ms = serializers.FloatField()
    duration_ms = serializers.FloatField()
    tokens_per_s = serializers.FloatField(allow_null=True)


class GenerationRunQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=RunStatus.values, required=False)
    model = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500)


class GenerationRunOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationRun
        fields = ["id", "created_at", "finished_at", "status", "finish_reason", "model_id", "model_name",
                  "model_digest", "prompt", "messages", "params", "seed", "context_digest", "context_tokens",
                  "tokens_out", "text", "principal", "correlation_id", "ttft_ms", "duration_ms", "replay_of"]


class GenerationSourceOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationSource
        fields = ["atom_id", "rank", "score", "sha256", "history_id", "span_start", "span_end", "truncated",
                  "mass_total", "top_steps"]


class GenerationStepOutput(serializers.ModelSerializer):
    class Meta:
        model = GenerationStep
        fields = ["position", "token_id", "text", "logprob", "alternatives", "attributions", "top_atom_id",
                  "top_mass"]


class GenerationRunDetailOutput(GenerationRunOutput):
    sources = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta(GenerationRunOutput.Meta):
        fields = GenerationRunOutput.Meta.fields + ["sources", "steps"]

    def get_sources(self, run) -> list[dict]:
        return GenerationSourceOutput(run.sources.order_by("rank"), many=True).data

    def get_steps(self, run) -> list[dict]:
        return GenerationStepOutput(run.steps.order_by("position"), many=True).data


class GenerationReplayOutput(serializers.Serializer):
    run = serializers.IntegerField()
    replay = serializers.IntegerField()
    identical = serializers.BooleanField()
    context_identical = serializers.BooleanField()
    tokens_compared = serializers.IntegerField()
    first_difference = serializers.DictField(allow_null=True)
    replay_run = GenerationRunOutput()


class AtomGenerationsQuery(serializers.Serializer):
    steps_per_run = serializers.IntegerField(default=50, min_value=0, max_value=1000)


class AtomCreditedStepOutput(serializers.Serializer):
    position = serializers.IntegerField()
    text = serializers.CharField()
    mass = serializers.FloatField()
    top = serializers.BooleanField()


class AtomRunOutput(serializers.Serializer):
    run = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    status = serializers.CharField()
    rank = serializers.IntegerField()
    mass_total = serializers.FloatField()
    share = serializers.FloatField(help_text="The atom's share of all the attention the run gave its sources")
    top_steps = serializers.IntegerField()
    steps_credited = serializers.IntegerField()
    steps = AtomCreditedStepOutput(many=True)


class AtomGenerationsOutput(serializers.Serializer):
    atom = serializers.IntegerField()
    runs = AtomRunOutput(many=True)
    total_runs = serializers.IntegerField()
    total_steps_credited = serializers.IntegerField()
    total_mass = serializers.FloatField()


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible chat completions
# --------------------------------------------------------------------------------------------------
@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]})
class ChatContentField(serializers.Field):
    """A message's content: a string, or a list of text parts [{type: "text", text}] joined."""

    default_error_messages = {"invalid": "content must be a string or a list of text parts (type 'text')."}

    def to_internal_value(self, data) -> str:
        if isinstance(data, list) and data and all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in data):
            data = "".join(p["text"] for p in data)
        if not isinstance(data, str) or "\x00" in data:
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class ChatMessageInput(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant"])
    content = ChatContentField()


class StreamOptions(serializers.Serializer):
    include_usage = serializers.BooleanField(default=False)


class ChatCompletionInput(SamplingInput, RetrievalInput):
    """OpenAI's request; `max_completion_tokens` is the newer name of `max_tokens`. Fields OpenAI defines
    that change nothing here are ignored (user, logit_bias absent, ...); ones we cannot honour are refused."""
    model = serializers.CharField(max_length=200)
    messages = ChatMessageInput(many=True, max_length=MAX_MESSAGES, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, min_value=1, max_value=GENERATION_CONTEXT)
    stream = serializers.BooleanField(default=False)
    stream_options = StreamOptions(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=0.0)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=0.0)
    logprobs = serializers.BooleanField(required=False, allow_null=True)

    def to_internal_value(self, data):
        if isinstance(data, dict) and isinstance(data.get("model"), int) and not isinstance(data["model"], bool):
            data = {**data, "model": str(data["model"])}
        return super().to_internal_value(data)

    def validate(self, attrs):
        refused = [f for f in ("tools", "functions", "tool_choice", "response_format")
                   if isinstance(self.initial_data, dict) and self.initial_data.get(f) not in (None, [], {})]
        if refused:
            raise serializers.ValidationError({"unsupported": refused})
        check_text([m["content"] for m in attrs["messages"]], "messages")
        if attrs.get("max_tokens") is None and attrs.get("max_completion_tokens") is not None:
            attrs["max_tokens"] = attrs["max_completion_tokens"]
        return attrs


def chat_spec(data: dict, *, model) -> GenerationSpec:
    messages = [{"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
                for m in data["messages"]]
    return GenerationSpec(model=model, messages=messages, k=data["k"], context_budget=data["context_budget"],
                          sampling=SamplingInput.sampling(data), knn_lambda=data["knn_lambda"],
                          alternatives=data["alternatives"], metadata_filter=data.get("metadata_filter") or None)
