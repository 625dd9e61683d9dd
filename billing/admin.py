from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import CreditBalance, CreditTransaction, Price, UsageEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Price)
class PriceAdmin(SimpleHistoryAdmin):
    list_display = ("meter", "credits_per_unit", "unit", "description")


@admin.register(CreditBalance)
class CreditBalanceAdmin(SimpleHistoryAdmin):
    list_display = ("tenant", "balance", "updated_at")
    readonly_fields = ("balance",)


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "meter", "quantity", "credits", "correlation_id")
    list_filter = ("meter", "tenant")
    date_hierarchy = "created_at"


@admin.register(CreditTransaction)
class CreditTransactionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "amount", "reason")
    list_filter = ("tenant",)
