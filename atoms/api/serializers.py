from __future__ import annotations

import math

import numpy as np
from django.conf import settings
from rest_framework import serializers

from ..models import Atom, Modality, SourceKind

FLOAT32_MAX = float(np.finfo(np.float32).max)


class AtomOutput(serializers.ModelSerializer):
    deleted = serializers.SerializerMethodField()

    class Meta:
        model = Atom
        fields = ["id", "sha256", "modality", "mime", "size", "metadata", "source_kind", "source_uri",
                  "time_start", "time_end", "created_at", "deleted_at", "deleted"]

    def get_deleted(self, atom) -> bool:
        return atom.deleted_at is not None


class AtomDetailOutput(AtomOutput):
    text = serializers.SerializerMethodField()
    embeddings = serializers.SerializerMethodField()
    relations = serializers.SerializerMethodField()

    class Meta(AtomOutput.Meta):
        fields = AtomOutput.Meta.fields + ["text", "embeddings", "relations"]

    def get_text(self, atom) -> str | None:
        return atom.text[:2000] if atom.text else None

    def get_embeddings(self, atom) -> list[dict]:
        return [{"model": e.model, "dim": e.dim, "point": e.point} for e in atom.embeddings.all()]

    def get_relations(self, atom) -> list[dict]:
        out = [{"relation": r.relation, "direction": "out", "atom": r.target_id, "weight": r.weight}
               for r in atom.relations_out.all()[:100]]
        out += [{"relation": r.relation, "direction": "in", "atom": r.source_id, "weight": r.weight}
                for r in atom.relations_in.all()[:100]]
        return out


class IngestOutput(serializers.Serializer):
    atom = AtomOutput()
    created = serializers.BooleanField()
    restored = serializers.BooleanField()
    atoms_new = serializers.IntegerField()
    atoms_existing = serializers.IntegerField()


class TextIngestInput(serializers.Serializer):
    text = serializers.CharField(allow_blank=False, trim_whitespace=False, max_length=10_000_000)
    name = serializers.CharField(required=False, max_length=255, default="text.txt")
    mime = serializers.CharField(required=False, max_length=100)
    metadata = serializers.DictField(required=False, default=dict)
    source_uri = serializers.CharField(required=False, max_length=2000, default="")


class UploadIngestInput(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    metadata = serializers.JSONField(required=False, default=dict)
    source_uri = serializers.CharField(required=False, max_length=2000, default="")

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object")
        return value


class FiltersInput(serializers.Serializer):
    modality = serializers.ListField(child=serializers.ChoiceField(choices=Modality.values), required=False)
    metadata = serializers.DictField(required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    source_kind = serializers.ChoiceField(choices=SourceKind.values, required=False)
    source_uri_prefix = serializers.CharField(required=False, max_length=2000)
    region = serializers.ListField(child=serializers.FloatField(), min_length=4, max_length=4, required=False)

    def validate_region(self, value):
        if not all(math.isfinite(v) for v in value):
            raise serializers.ValidationError("region must be four finite numbers: x1, y1, x2, y2")
        return tuple(value)


class ListQuery(serializers.Serializer):
    modality = serializers.CharField(required=False)
    source_kind = serializers.ChoiceField(choices=SourceKind.values, required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    source_uri_prefix = serializers.CharField(required=False, max_length=2000)
    metadata = serializers.JSONField(required=False)

    def validate_modality(self, value):
        items = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in items if v not in Modality.values]
        if unknown:
            raise serializers.ValidationError(f"unknown modality: {', '.join(unknown)}")
        return items

    def validate_metadata(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("metadata must be a JSON object")
        return value


class FiniteFloat(serializers.FloatField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise serializers.ValidationError("must be a finite number within float32 range")
        return value


class VectorInput(serializers.ListField):
    """A list of finite numbers within float32 range. A plain list of ints and floats is checked with
    NumPy in one go (per-element fields cost ~1 µs a number); anything else takes the per-element
    path, with its per-index error messages."""

    def __init__(self, **kwargs):
        super().__init__(child=FiniteFloat(), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, list) and all(type(v) is float or type(v) is int for v in data):
            try:
                values = np.asarray(data, dtype=np.float64)  # values: (D,) float64
            except OverflowError:  # an int beyond float64: the per-element path reports it
                values = None
            if values is not None and np.isfinite(values).all() and (np.abs(values) <= FLOAT32_MAX).all():
                return values.tolist()
        return super().to_internal_value(data)


class SearchInput(serializers.Serializer):
    text = serializers.CharField(required=False, max_length=10_000, allow_blank=False)
    vector = VectorInput(required=False, min_length=1, max_length=4096)
    atom = serializers.CharField(required=False, max_length=64)
    model = serializers.CharField(required=False, max_length=100)
    k = serializers.IntegerField(required=False, default=10, min_value=1)
    filters = FiltersInput(required=False)
    weights = serializers.DictField(child=FiniteFloat(min_value=0), required=False)
    ef_search = serializers.IntegerField(required=False, min_value=1, max_value=1000)

    def validate_k(self, value):
        if value > settings.SEARCH_MAX_K:
            raise serializers.ValidationError(f"k must be at most {settings.SEARCH_MAX_K}")
        return value

    def validate_weights(self, value):
        unknown = set(value) - {"vector", "fulltext", "trigram"}
        if unknown:
            raise serializers.ValidationError(f"unknown retrievers: {', '.join(sorted(unknown))}")
        return value

    def validate(self, data):
        given = [name for name in ("text", "vector", "atom") if data.get(name) not in (None, "")]
        if not given:
            raise serializers.ValidationError("give one of text, vector or atom")
        return data


class SearchHitOutput(serializers.Serializer):
    atom = AtomOutput()
    score = serializers.FloatField()
    why = serializers.DictField()
    snippet = serializers.CharField(allow_null=True)
