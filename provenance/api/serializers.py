from __future__ import annotations

from rest_framework import serializers

from ..selectors import DIRECTIONS, MAX_DEPTH


class LineageQuery(serializers.Serializer):
    node = serializers.CharField(max_length=260, help_text='"kind:ref" (e.g. "atom:12") or a node id')
    depth = serializers.IntegerField(min_value=1, max_value=MAX_DEPTH, default=3)
    direction = serializers.ChoiceField(choices=DIRECTIONS, default="upstream")
    as_of = serializers.DateTimeField(required=False)


class ExportQuery(LineageQuery):
    standard = serializers.ChoiceField(choices=["prov", "openlineage"], default="prov")  # not `format`: DRF owns it


class PathQuery(serializers.Serializer):
    source = serializers.CharField(max_length=260)
    target = serializers.CharField(max_length=260)
    max_depth = serializers.IntegerField(min_value=1, max_value=MAX_DEPTH, default=MAX_DEPTH)
    as_of = serializers.DateTimeField(required=False)


class ImpactQuery(serializers.Serializer):
    as_of = serializers.DateTimeField(required=False)


class RetractInput(serializers.Serializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class NodeOutput(serializers.Serializer):
    id = serializers.CharField(source="key")
    pk = serializers.IntegerField()
    kind = serializers.CharField()
    ref = serializers.CharField()
    label = serializers.CharField()
    created_at = serializers.DateTimeField()
    retracted_at = serializers.DateTimeField(allow_null=True)
    flagged_at = serializers.DateTimeField(allow_null=True)


class EdgeOutput(serializers.Serializer):
    origin = serializers.CharField()
    destination = serializers.CharField()
    type = serializers.CharField()
    weight = serializers.FloatField()
    time = serializers.DateTimeField()


class GraphEntry(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    depth = serializers.IntegerField()
    data = NodeOutput()
    inEdges = EdgeOutput(many=True)  # noqa: N815 (Marquez's field names)
    outEdges = EdgeOutput(many=True)  # noqa: N815


class LineageOutput(serializers.Serializer):
    graph = GraphEntry(many=True)


class PathOutput(serializers.Serializer):
    path = NodeOutput(many=True)
    hops = serializers.IntegerField()


class DependantOutput(serializers.Serializer):
    node = NodeOutput()
    depth = serializers.IntegerField()
    mass = serializers.FloatField()


class ImpactOutput(serializers.Serializer):
    atom = serializers.IntegerField()
    node = NodeOutput(allow_null=True)
    retracted = serializers.BooleanField()
    total_mass = serializers.FloatField()
    dependants = DependantOutput(many=True)


class RetractionOutput(serializers.Serializer):
    atom = serializers.IntegerField()
    reason = serializers.CharField()
    at = serializers.DateTimeField()
    flagged = serializers.IntegerField()
    dependants = serializers.ListField(child=serializers.DictField())
