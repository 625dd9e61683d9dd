"""Plain Django views: the landing page and error handlers that keep the one error shape."""
from __future__ import annotations

from django.shortcuts import render

from .errors import error_response


def home(request):
    return render(request, "home.html", {"tenant": getattr(request, "tenant", None)})


def api_not_found(request, rest: str = ""):
    return error_response(404, "not_found", "No such API endpoint.", {"path": request.path})


def not_found(request, exception=None):
    return error_response(404, "not_found", "Not found.", {"path": request.path})


def bad_request(request, exception=None):
    return error_response(400, "bad_request", "Bad request.")


def server_error(request):
    return error_response(500, "internal_error", "An internal error occurred; it has been logged.")
