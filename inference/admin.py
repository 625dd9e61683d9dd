from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import InferenceRequest, Model, ModelJob, ModelLineage, ModelTensor


class ModelTensorInline(admin.TabularInline):
    model = ModelTensor
    fields = ("index", "name", "qtype", "shape", "nbytes", "chunks")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False


@admin.register(Model)
class ModelAdmin(SimpleHistoryAdmin):
    list_display = ("id", "name", "architecture", "format", "quantization", "n_tensors", "n_parameters", "size_bytes",
                    "new_bytes", "created_at")
    list_filter = ("architecture", "format", "quantization")
    search_fields = ("name", "source_sha256", "source_uri")
    readonly_fields = ("source_sha256", "root", "tokenizer", "n_tensors", "n_parameters", "size_bytes", "new_bytes",
                       "created_at")
    inlines = [ModelTensorInline]


@admin.register(ModelTensor)
class ModelTensorAdmin(admin.ModelAdmin):
    list_display = ("model", "index", "name", "qtype", "nbytes")
    list_filter = ("qtype",)
    search_fields = ("name",)


@admin.register(ModelLineage)
class ModelLineageAdmin(SimpleHistoryAdmin):
    list_display = ("child", "relation", "parent", "created_at")
    list_filter = ("relation",)


@admin.register(InferenceRequest)
class InferenceRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "kind", "tokens_in", "tokens_out", "duration_ms", "cost", "created_at")
    list_filter = ("kind",)
    date_hierarchy = "created_at"


@admin.register(ModelJob)
class ModelJobAdmin(admin.ModelAdmin):
    list_display = ("task_id", "kind", "model", "state", "created_at", "finished_at")
    list_filter = ("kind", "state")
    readonly_fields = ("task_id", "kind", "model", "params", "state", "result", "error", "created_at", "finished_at")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False
