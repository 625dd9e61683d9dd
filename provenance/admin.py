from django.contrib import admin
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from .graphsvg import neighbourhood_svg
from .models import (
    DeadLetter,
    GenerationRun,
    LedgerRecord,
    OutboxEvent,
    ProvEdge,
    ProvNode,
    Retraction,
)
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


# --------------------------------------------------------------------------------------------------
# AtomicStream: a generation with each token highlighted by its top source atom
# --------------------------------------------------------------------------------------------------
SOURCE_COLOURS = ["#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc", "#fecaca",
                  "#d9f99d", "#e5e7eb"]
SNIPPET_CHARS = 120


def _token_title(step, alternatives: int = 5) -> str:
    lines = [f"#{step.position} token {step.token_id}, logprob {step.logprob:.3f}"]
    if step.attributions:
        lines.append("sources: " + ", ".join(f"atom {a['atom']} {a['mass']:.3f}" for a in step.attributions))
    else:
        lines.append("sources: none above the recording threshold")
    if step.alternatives:
        lines.append("alternatives: " + ", ".join(f"{a['text']!r} {a['logprob']:.2f}"
                                                   for a in step.alternatives[:alternatives]))
    return "\n".join(lines)


def generation_highlight(run: GenerationRun) -> dict:
    """What the admin page draws: the legend (a colour per source, by rank) and the tokens with theirs."""
    from atoms.models import Atom

    sources = list(run.sources.all())
    texts = dict(Atom.objects.filter(pk__in=[s.atom_id for s in sources]).values_list("id", "text"))
    colour = {s.atom_id: SOURCE_COLOURS[s.rank % len(SOURCE_COLOURS)] for s in sources}
    legend = [{"source": s, "colour": colour[s.atom_id],
               "snippet": " ".join((texts.get(s.atom_id) or "").split())[:SNIPPET_CHARS]} for s in sources]
    steps = list(run.steps.all())
    tokens = [{"step": st, "colour": colour.get(st.top_atom_id, ""), "title": _token_title(st)} for st in steps]
    return {"highlight": True, "legend": legend, "tokens": tokens, "steps": steps}


@admin.register(GenerationRun)
class GenerationRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "model_name", "tokens_out", "finish_reason", "created_at", "principal")
    list_filter = ("status", "finish_reason", "model_name")
    search_fields = ("prompt", "text", "correlation_id")
    change_form_template = "provenance/generationrun_change_form.html"
    fields = ("status", "finish_reason", "model_id", "model_name", "model_digest", "prompt", "messages", "params",
              "seed", "context_digest", "context_tokens", "tokens_out", "principal", "correlation_id", "ttft_ms",
              "duration_ms", "replay_of", "created_at", "finished_at")

    def has_delete_permission(self, request, obj=None):
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        from django.core.exceptions import PermissionDenied

        if not self.has_view_permission(request):  # before any query: the public schema has no runs table
            raise PermissionDenied
        run = self.get_object(request, object_id)
        extra = generation_highlight(run) if run is not None else {}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})
