"""The admin shows each schema only what lives in it: platform models (tenants, keys, billing,
schedules) on the public host, a tenant's own data (atoms, models, concepts, runs ...) on its host.

Every ModelAdmin registered on this site is wrapped with SchemaScoped, so a hidden model is neither
listed nor reachable (403) instead of failing on a table that does not exist in that schema.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models.base import ModelBase
from django_tenants.utils import get_public_schema_name


def _labels(apps: list[str]) -> set[str]:
    return {app.rsplit(".", 1)[-1] for app in apps}


def visible_here(model) -> bool:
    label = model._meta.app_label
    if connection.schema_name == get_public_schema_name():
        return label in _labels(settings.SHARED_APPS)
    return label in _labels(settings.TENANT_APPS)


class SchemaScoped:
    def has_module_permission(self, request):
        return visible_here(self.model) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return visible_here(self.model) and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args):
        return visible_here(self.model) and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return visible_here(self.model) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return visible_here(self.model) and super().has_delete_permission(request, obj)

    # Django looks the object up before asking for permission: refuse first, or a tenant table that does
    # not exist in this schema fails with a 500
    def _visible_or_403(self):
        if not visible_here(self.model):
            raise PermissionDenied

    def changeform_view(self, request, *args, **kwargs):
        self._visible_or_403()
        return super().changeform_view(request, *args, **kwargs)

    def delete_view(self, request, *args, **kwargs):
        self._visible_or_403()
        return super().delete_view(request, *args, **kwargs)

    def history_view(self, request, *args, **kwargs):
        self._visible_or_403()
        return super().history_view(request, *args, **kwargs)


class SchemaAwareAdminSite(admin.AdminSite):
    site_header = "Hartonomous"
    site_title = "Hartonomous admin"

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        models = [model_or_iterable] if isinstance(model_or_iterable, ModelBase) else model_or_iterable
        scoped = type(admin_class.__name__, (SchemaScoped, admin_class), {"__module__": admin_class.__module__})
        for model in models:
            super().register(model, scoped, **options)


class HartonomousAdminConfig(AdminConfig):
    default_site = "hartonomous.admin_site.SchemaAwareAdminSite"
