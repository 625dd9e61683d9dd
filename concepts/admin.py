from django.contrib import admin, messages
from django.db import connection
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from .models import AnalyticsResult, Concept, ConceptEvent, DiscoveryRun
from .selectors import concept_members


@admin.register(Concept)
class ConceptAdmin(SimpleHistoryAdmin):
    list_display = ("id", "label", "modality", "model", "size", "cohesion", "state", "run", "updated_at")
    list_filter = ("state", "modality", "model")
    search_fields = ("label",)
    exclude = ("centroid",)
    readonly_fields = ("atom", "born_run", "run", "merged_into", "members_preview")

    @admin.display(description="members (nearest first)")
    def members_preview(self, concept):
        rows = []
        for atom, distance in concept_members(concept=concept, limit=12):
            if atom.modality in ("image", "video_frame"):
                preview = format_html('<img src="/api/atoms/{}/content" style="max-height:64px">', atom.pk)
            else:
                preview = (atom.text or (atom.metadata or {}).get("name") or "")[:120]
            rows.append((atom.pk, atom.modality, f"{distance:.3f}", preview))
        return format_html("<table>{}</table>", format_html_join(
            "", "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))


@admin.register(DiscoveryRun)
class DiscoveryRunAdmin(SimpleHistoryAdmin):
    list_display = ("id", "state", "trigger", "started_at", "finished_at", "k", "silhouette", "born", "died",
                    "merged", "atoms_assigned")
    list_filter = ("state", "trigger")
    readonly_fields = [f.name for f in DiscoveryRun._meta.fields]
    actions = ["discover_now"]

    @admin.action(description="Queue a discovery run for this tenant now")
    def discover_now(self, request, queryset):
        from .tasks import discover_concepts_task

        discover_concepts_task.delay(connection.schema_name, "admin")
        self.message_user(request, "Discovery queued.", messages.SUCCESS)


@admin.register(ConceptEvent)
class ConceptEventAdmin(admin.ModelAdmin):
    list_display = ("id", "run", "kind", "concept", "other", "created_at")
    list_filter = ("kind",)


@admin.register(AnalyticsResult)
class AnalyticsResultAdmin(SimpleHistoryAdmin):
    list_display = ("id", "kind", "summary", "created_at")
    list_filter = ("kind",)
    readonly_fields = ("kind", "params", "result", "created_at")

    @admin.display(description="result")
    def summary(self, row):
        return ", ".join(f"{k}={v}" for k, v in list(row.result.items())[:4])
