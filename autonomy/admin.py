"""Governance UI: approvals with their action, expected effect and evidence (approve / reject), runs,
and dead letters (requeue / discard). Tenant tables: open the admin on the tenant's domain."""
from django.contrib import admin, messages
from simple_history.admin import SimpleHistoryAdmin

from hartonomous.errors import ApplicationError

from .models import (
    ActionOutcome,
    Approval,
    CandidateAction,
    DeadLetter,
    ImprovementRun,
    ScorerState,
    Signal,
)
from .services import approval_decide, dead_letter_discard, dead_letter_requeue


def _decide(request, queryset, decision):
    from django.db import connection

    done = 0
    for approval in queryset:
        try:
            approval_decide(tenant=connection.tenant, approval_id=approval.pk, decision=decision,
                            actor=f"admin:{request.user}")
            done += 1
        except ApplicationError as exc:
            messages.warning(request, f"approval {approval.pk}: {exc.message}")
    messages.success(request, f"{decision}d {done} approval(s).")


@admin.action(description="Approve the selected actions")
def approve(modeladmin, request, queryset):
    _decide(request, queryset, "approve")


@admin.action(description="Reject the selected actions")
def reject(modeladmin, request, queryset):
    _decide(request, queryset, "reject")


@admin.register(Approval)
class ApprovalAdmin(SimpleHistoryAdmin):
    list_display = ("id", "state", "executor", "risk", "expected_effect", "created_at", "expires_at")
    list_filter = ("state",)
    readonly_fields = ("action", "state", "executor", "params", "risk", "expected_effect", "evidence", "decided_by",
                       "decided_at", "created_at", "expires_at")
    fields = readonly_fields + ("note",)
    actions = [approve, reject]

    @admin.display(description="executor")
    def executor(self, obj):
        return obj.action.executor

    @admin.display(description="params")
    def params(self, obj):
        return obj.action.params

    @admin.display(description="risk")
    def risk(self, obj):
        return round(obj.action.risk, 3)


class SignalInline(admin.TabularInline):
    model = Signal
    extra = 0
    readonly_fields = ("kind", "value", "available", "details")
    can_delete = False


class ActionInline(admin.TabularInline):
    model = CandidateAction
    extra = 0
    fields = ("rank", "executor", "params", "expected_gain", "risk", "score", "state", "attempts", "error")
    readonly_fields = fields
    can_delete = False


@admin.register(ImprovementRun)
class ImprovementRunAdmin(SimpleHistoryAdmin):
    list_display = ("id", "state", "phase", "trigger", "dry_run", "actions_used", "stop_reason", "created_at")
    list_filter = ("state", "phase", "trigger", "dry_run")
    readonly_fields = [f.name for f in ImprovementRun._meta.fields]
    inlines = [SignalInline, ActionInline]


@admin.register(CandidateAction)
class CandidateActionAdmin(SimpleHistoryAdmin):
    list_display = ("id", "run", "executor", "state", "risk", "score", "attempts", "created_at")
    list_filter = ("state", "executor")
    readonly_fields = [f.name for f in CandidateAction._meta.fields]


@admin.action(description="Requeue the selected dead letters")
def requeue(modeladmin, request, queryset):
    for letter in queryset:
        try:
            dead_letter_requeue(letter_id=letter.pk)
        except ApplicationError as exc:
            messages.warning(request, f"dead letter {letter.pk}: {exc.message}")


@admin.action(description="Discard the selected dead letters")
def discard(modeladmin, request, queryset):
    for letter in queryset:
        dead_letter_discard(letter_id=letter.pk)


@admin.register(DeadLetter)
class DeadLetterAdmin(SimpleHistoryAdmin):
    list_display = ("id", "task", "state", "retries", "error", "created_at")
    list_filter = ("state", "task")
    search_fields = ("task", "error")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = [requeue, discard]


admin.site.register(ActionOutcome)
admin.site.register(ScorerState, SimpleHistoryAdmin)
