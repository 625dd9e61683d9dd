from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import Atom, AtomEmbedding, AtomRelation, IngestJob


@admin.register(Atom)
class AtomAdmin(SimpleHistoryAdmin):
    list_display = ("id", "modality", "mime", "size", "short_sha", "source_kind", "created_at", "deleted_at")
    list_filter = ("modality", "source_kind", "deleted_at")
    search_fields = ("sha256", "source_uri", "text")
    readonly_fields = ("sha256", "size", "in_blob", "created_at")
    exclude = ("content",)

    @admin.display(description="sha256")
    def short_sha(self, atom):
        return atom.sha256[:16]


@admin.register(AtomRelation)
class AtomRelationAdmin(SimpleHistoryAdmin):
    list_display = ("source", "relation", "target", "weight", "created_at")
    list_filter = ("relation",)


@admin.register(AtomEmbedding)
class AtomEmbeddingAdmin(admin.ModelAdmin):
    list_display = ("atom", "model", "dim", "point", "created_at")
    list_filter = ("model",)
    exclude = ("vector",)


@admin.register(IngestJob)
class IngestJobAdmin(admin.ModelAdmin):
    list_display = ("id", "state", "source", "atoms_new", "atoms_deduplicated", "files_failed", "created_at")
    list_filter = ("state",)
