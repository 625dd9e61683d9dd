from django.contrib import admin
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from .graphsvg import neighbourhood_svg
from .models import DeadLetter, LedgerRecord, OutboxEvent, ProvEdge, ProvNode, Retraction
from .selectors import lineage


@admin.register(ProvNode)
class ProvNodeAdmin(SimpleHistoryAdmin):
    list_display = ("id", "kind", "ref", "label", "created_at", "retracted_at", "flagged_at", "graph_link")
    list_filter = ("kind", "retracted_at", "flagged_at")
    search_fields = ("ref", "label")

    @admin.display(description="graph")
    def graph_link(self, node):
        return format_html('<a href="{}">graph</a>', reverse("admin:provenance_provnode_graph", args=[node.pk]))

    def get_urls(self):
        urls = [path("<int:pk>/graph/", self.admin_site.admin_view(self.graph_view), name="provenance_provnode_graph")]
        return urls + super().get_urls()

    def graph_view(self, request, pk: int):
        node = get_object_or_404(ProvNode, pk=pk)
        raw = request.GET.get("depth", "2")
        depth = min(max(int(raw), 1), 4) if raw.isdigit() else 2
        graph = lineage(node=node, depth=depth, direction="both")
        context = {**self.admin_site.each_context(request), "node": node, "depth": depth, "svg": neighbourhood_svg(graph),
                   "node_count": len(graph.nodes), "edge_count": len(graph.edges), "opts": self.model._meta,
                   "title": f"Provenance graph of {node}"}
        return TemplateResponse(request, "provenance/graph.html", context)


@admin.register(ProvEdge)
class ProvEdgeAdmin(SimpleHistoryAdmin):
    list_display = ("id", "source", "type", "target", "weight", "valid_from", "valid_to")
    list_filter = ("type",)
    raw_id_fields = ("source", "target")


@admin.register(Retraction)
class RetractionAdmin(SimpleHistoryAdmin):
    list_display = ("node", "at", "reason")
    raw_id_fields = ("node",)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LedgerRecord)
class LedgerRecordAdmin(ReadOnlyAdmin):
    list_display = ("seq", "digest", "prev_digest", "created_at")


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "sent_at", "attempts", "dead", "last_error")
    list_filter = ("dead", "sent_at")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("event", "attempts", "created_at", "resolved_at", "error")
    list_filter = ("resolved_at",)
    readonly_fields = ("event", "payload", "error", "attempts", "created_at")
    actions = ["replay"]

    @admin.action(description="Queue the events again (replay from the first selected position)")
    def replay(self, request, queryset):
        from django.db import connection
        from django.utils import timezone

        from .services import outbox_replay_from

        first = queryset.order_by("event_id").first()
        if first is not None:
            count = outbox_replay_from(tenant=connection.tenant, position=first.event_id)
            queryset.update(resolved_at=timezone.now())
            self.message_user(request, f"{count} event(s) queued again from position {first.event_id}.")
