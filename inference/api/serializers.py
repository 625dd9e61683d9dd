from __future__ import annotations

from rest_framework import serializers

from ..models import InferenceKind, LineageRelation, Model, ModelJob, ModelLineage, ModelTensor


class ModelOutput(serializers.ModelSerializer):
    dedup_savings = serializers.IntegerField(read_only=True)

    class Meta:
        model = Model
        fields = ["id", "name", "architecture", "format", "quantization", "hyperparameters", "source_sha256",
                  "source_uri", "root", "tokenizer", "n_tensors", "n_parameters", "size_bytes", "new_bytes",
                  "dedup_savings", "created_at"]


class TensorOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelTensor
        fields = ["index", "name", "shape", "qtype", "nbytes", "chunks"]


class LineageOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelLineage
        fields = ["id", "child", "parent", "relation", "metadata", "created_at"]


class ModelDetailOutput(ModelOutput):
    tensors = serializers.SerializerMethodField()
    lineage = serializers.SerializerMethodField()
    stored_bytes = serializers.SerializerMethodField()

    class Meta(ModelOutput.Meta):
        fields = ModelOutput.Meta.fields + ["tensors", "lineage", "stored_bytes"]

    def get_tensors(self, model) -> list[dict]:
        return TensorOutput(model.tensors.order_by("index"), many=True).data

    def get_lineage(self, model) -> list[dict]:
        edges = list(model.parents.all()) + list(model.children.all())
        return LineageOutput(edges, many=True).data

    def get_stored_bytes(self, model) -> int:
        from ..selectors import model_unique_bytes

        return model_unique_bytes(model=model)


class IngestInput(serializers.Serializer):
    path = serializers.CharField(required=False, max_length=4096)
    carrier = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", required=False)
    name = serializers.CharField(required=False, max_length=200)

    def validate(self, attrs):
        if ("path" in attrs) == ("carrier" in attrs):
            raise serializers.ValidationError("Give exactly one of 'path' or 'carrier'.")
        return attrs


class IngestOutput(serializers.Serializer):
    model = ModelOutput()
    created = serializers.BooleanField()
    new_bytes = serializers.IntegerField()


class PredictInput(serializers.Serializer):
    model = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=InferenceKind.choices)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, max_length=200_000)
    texts = serializers.ListField(child=serializers.CharField(allow_blank=True, trim_whitespace=False,
                                                              max_length=100_000),
                                  required=False, min_length=1, max_length=256)
    top = serializers.IntegerField(required=False, min_value=1, max_value=100, default=10)
    max_tokens = serializers.IntegerField(required=False, min_value=1, max_value=1024, default=64)
    temperature = serializers.FloatField(required=False, min_value=0.0, max_value=100.0, default=0.0)
    top_p = serializers.FloatField(required=False, min_value=0.0, max_value=1.0, default=1.0)
    top_k = serializers.IntegerField(required=False, min_value=0, max_value=1_000_000, default=0)
    repetition_penalty = serializers.FloatField(required=False, min_value=0.0, max_value=100.0, default=1.0)
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**63 - 1, allow_null=True, default=None)
    stop = serializers.ListField(child=serializers.CharField(min_length=1, max_length=200, trim_whitespace=False),
                                 required=False, max_length=16, default=list)

    def validate_top_p(self, value):
        if value <= 0:
            raise serializers.ValidationError("top_p must be in (0, 1].")
        return value

    def validate_repetition_penalty(self, value):
        if value <= 0:
            raise serializers.ValidationError("repetition_penalty must be > 0.")
        return value

    def validate(self, attrs):
        has_text, has_texts = "text" in attrs, "texts" in attrs
        if attrs["kind"] == "embed":
            if has_text == has_texts:
                raise serializers.ValidationError("embed takes exactly one of 'text' or 'texts'.")
        elif not has_text or has_texts or not attrs["text"]:
            raise serializers.ValidationError(f"{attrs['kind']} takes a non-empty 'text'.")
        return attrs

    @staticmethod
    def sampling(d: dict) -> dict:
        return {k: d[k] for k in ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")} | {
            "stop": tuple(d["stop"])}


class PredictOutput(serializers.Serializer):
    request_id = serializers.IntegerField()
    model = serializers.IntegerField()
    kind = serializers.CharField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    duration_ms = serializers.FloatField()
    cost = serializers.CharField()


class KnnBuildInput(serializers.Serializer):
    max_atoms = serializers.IntegerField(default=5000, min_value=1, max_value=100_000)
    max_tokens = serializers.IntegerField(default=200_000, min_value=2, max_value=5_000_000)
    metadata = serializers.DictField(required=False, help_text="Only the atoms whose metadata contains this")


class StudentInput(serializers.Serializer):
    drop = serializers.IntegerField(min_value=1, max_value=1000, help_text="How many layers to drop")
    max_tokens = serializers.IntegerField(default=64, min_value=8, max_value=2048,
                                          help_text="Tokens of the tenant's text that rank layer importance")
    name = serializers.CharField(required=False, max_length=200)
    texts = serializers.ListField(child=serializers.CharField(max_length=100_000), required=False, max_length=100,
                                  help_text="Text to measure on (default: the tenant's newest text atoms)")


class ModelJobOutput(serializers.ModelSerializer):
    task = serializers.CharField(source="task_id", help_text="Poll GET /api/models/jobs/{task}")
    status = serializers.CharField(source="state")

    class Meta:
        model = ModelJob
        fields = ["task", "kind", "model", "params", "status", "result", "error", "created_at", "finished_at"]


class LineageInput(serializers.Serializer):
    parent = serializers.IntegerField(min_value=1)
    relation = serializers.ChoiceField(choices=LineageRelation.choices)
    metadata = serializers.DictField(required=False)

