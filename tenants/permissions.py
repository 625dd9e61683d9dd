"""Scopes: safe methods need `read`, others `write`; a view may ask for another scope per method."""
from __future__ import annotations

from rest_framework import permissions

from .principal import Principal


def required_scope(request, view) -> str:
    by_method = getattr(view, "required_scopes", None) or {}
    if request.method in by_method:
        return by_method[request.method]
    if getattr(view, "required_scope", None):
        return view.required_scope
    return "read" if request.method in permissions.SAFE_METHODS else "write"


class HasScope(permissions.BasePermission):
    message = "This credential lacks the scope this operation needs."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        scope = required_scope(request, view)
        self.message = f"This operation needs the '{scope}' scope."
        return principal.has_scope(scope)
