from __future__ import annotations

from rest_framework import serializers

from atoms.models import Modality

from ..models import Concept, DiscoveryRun

MEDIA = {"image", "video_frame", "audio", "video"}


class ListQuery(serializers.Serializer):
    modality = serializers.ChoiceField(choices=Modality.choices, required=False)
    model = serializers.CharField(max_length=100, required=False)
    state = serializers.MultipleChoiceField(choices=Concept.State.choices, required=False)
    min_size = serializers.IntegerField(min_value=0, max_value=10**9, required=False)
    label = serializers.CharField(max_length=200, required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False)


class DetailQuery(serializers.Serializer):
    members = serializers.IntegerField(min_value=1, max_value=500, default=50)


class ConceptOutput(serializers.ModelSerializer):
    atom = serializers.IntegerField(source="atom_id")
    merged_into = serializers.IntegerField(source="merged_into_id", allow_null=True)
    born_run = serializers.IntegerField(source="born_run_id")
    run = serializers.IntegerField(source="run_id")

    class Meta:
        model = Concept
        fields = ["id", "atom", "modality", "model", "label", "representatives", "cohesion", "spread", "size",
                  "state", "merged_into", "born_run", "run", "created_at", "updated_at"]


class MemberOutput(serializers.Serializer):
    atom = serializers.IntegerField()
    modality = serializers.CharField()
    distance = serializers.FloatField()
    name = serializers.CharField(allow_blank=True)
    snippet = serializers.CharField(allow_null=True)
    content_url = serializers.CharField(allow_null=True, help_text="Thumbnail/playback source for media members")
    time_start = serializers.FloatField(allow_null=True)
    time_end = serializers.FloatField(allow_null=True)


class BindingOutput(serializers.Serializer):
    concept = serializers.IntegerField(allow_null=True)
    label = serializers.CharField(allow_blank=True)
    relation = serializers.CharField()
    direction = serializers.CharField()
    confidence = serializers.FloatField()
    count = serializers.IntegerField(allow_null=True)
    pmi = serializers.FloatField(allow_null=True)
    npmi = serializers.FloatField(allow_null=True)
    lift = serializers.FloatField(allow_null=True)
    cross_modal = serializers.BooleanField(allow_null=True)


class EventOutput(serializers.Serializer):
    run = serializers.IntegerField(source="run_id")
    kind = serializers.CharField()
    other = serializers.IntegerField(source="other_id", allow_null=True)
    created_at = serializers.DateTimeField()


class ConceptDetailOutput(ConceptOutput):
    centroid = serializers.SerializerMethodField()
    members = serializers.SerializerMethodField()
    bindings = serializers.SerializerMethodField()
    events = serializers.SerializerMethodField()

    class Meta(ConceptOutput.Meta):
        fields = ConceptOutput.Meta.fields + ["centroid", "members", "bindings", "events"]

    def get_centroid(self, concept) -> list[float]:
        return [float(v) for v in concept.centroid]

    def get_members(self, concept) -> list[MemberOutput]:
        return MemberOutput(self.context.get("members", []), many=True).data

    def get_bindings(self, concept) -> list[BindingOutput]:
        return BindingOutput(self.context.get("bindings", []), many=True).data

    def get_events(self, concept) -> list[EventOutput]:
        return EventOutput(concept.events.all()[:100], many=True).data


def member_row(atom, distance: float) -> dict:
    name = (atom.metadata or {}).get("name") or atom.source_uri.rsplit("/", 1)[-1]
    return {"atom": atom.pk, "modality": atom.modality, "distance": distance, "name": str(name)[:200],
            "snippet": atom.text[:200] if atom.text else None,
            "content_url": f"/api/atoms/{atom.pk}/content" if atom.modality in MEDIA else None,
            "time_start": atom.time_start, "time_end": atom.time_end}


class RunOutput(serializers.ModelSerializer):
    class Meta:
        model = DiscoveryRun
        fields = ["id", "state", "trigger", "started_at", "finished_at", "k", "silhouette", "inertia", "atoms_seen",
                  "atoms_assigned", "born", "died", "merged", "progress", "outcome", "error"]
