from django.contrib import admin, messages
from django.utils import timezone
from django_tenants.admin import TenantAdminMixin
from simple_history.admin import SimpleHistoryAdmin

from .models import ApiKey, Domain, Tenant, TenantSecurityPolicy
from .services import api_key_create


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


class PolicyInline(admin.StackedInline):
    model = TenantSecurityPolicy
    extra = 0


@admin.register(Tenant)
class TenantAdmin(TenantAdminMixin, SimpleHistoryAdmin):
    list_display = ("schema_name", "name", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("schema_name", "name")
    inlines = [DomainInline, PolicyInline]


@admin.register(TenantSecurityPolicy)
class TenantSecurityPolicyAdmin(SimpleHistoryAdmin):
    list_display = ("tenant", "requests_per_minute", "requests_per_minute_per_key", "approval_risk_threshold", "updated_at")
    search_fields = ("tenant__schema_name",)


@admin.action(description="Revoke selected keys")
def revoke_keys(modeladmin, request, queryset):
    count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    messages.success(request, f"Revoked {count} key(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(SimpleHistoryAdmin):
    list_display = ("name", "tenant", "prefix", "scopes", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("tenant", "revoked_at")
    search_fields = ("name", "prefix", "tenant__schema_name")
    readonly_fields = ("prefix", "hashed_key", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "name", "scopes", "expires_at", "prefix", "hashed_key", "created_at", "last_used_at", "revoked_at")
    actions = [revoke_keys]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = api_key_create(tenant=obj.tenant, name=obj.name, scopes=obj.scopes, expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.hashed_key = key.pk, key.prefix, key.hashed_key
        messages.warning(request, f"New API key (shown once, copy it now): {raw}")
