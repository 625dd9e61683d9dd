"""One error family and one DRF exception handler: every error has the same JSON shape.

{"error": {"code": "...", "message": "...", "details": {...}, "correlation_id": "..."}}
"""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from . import correlation

log = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of every error a service raises on purpose; maps to a 4xx."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: dict | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class ValidationFailed(ApplicationError):
    status, code = 400, "validation_error"


class NotAuthenticated(ApplicationError):
    status, code = 401, "not_authenticated"


class PaymentRequired(ApplicationError):
    status, code = 402, "insufficient_credits"


class Forbidden(ApplicationError):
    status, code = 403, "forbidden"


class NotFound(ApplicationError):
    status, code = 404, "not_found"


class Conflict(ApplicationError):
    status, code = 409, "conflict"


class TooLarge(ApplicationError):
    status, code = 413, "too_large"


class UnsupportedMedia(ApplicationError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ApplicationError):
    status, code = 422, "unprocessable"


class Throttled(ApplicationError):
    status, code = 429, "throttled"


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "correlation_id": correlation.get(),
        }
    }


def error_response(status: int, code: str, message: str, details: dict | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


_DRF_CODES = {
    drf.ParseError: "parse_error",
    drf.AuthenticationFailed: "authentication_failed",
    drf.NotAuthenticated: "not_authenticated",
    drf.PermissionDenied: "forbidden",
    drf.NotFound: "not_found",
    drf.MethodNotAllowed: "method_not_allowed",
    drf.NotAcceptable: "not_acceptable",
    drf.UnsupportedMediaType: "unsupported_media_type",
    drf.Throttled: "throttled",
    drf.ValidationError: "validation_error",
}


def _drf_details(exc: drf.APIException) -> dict:
    detail = exc.detail
    if isinstance(exc, drf.ValidationError):
        return {"fields": detail} if isinstance(detail, dict) else {"errors": detail}
    return {}


def _drf_message(exc: drf.APIException) -> str:
    if isinstance(exc, drf.ValidationError):
        return "The request is not valid."
    return str(exc.detail)


def exception_handler(exc, context):
    headers = {}
    if isinstance(exc, ApplicationError):
        status, code, message, details = exc.status, exc.code, exc.message, exc.details
        if isinstance(exc, Throttled) and "retry_after" in exc.details:
            headers["Retry-After"] = str(exc.details["retry_after"])
    elif isinstance(exc, (Http404, drf.NotFound)):
        status, code, message, details = 404, "not_found", "Not found.", {}
    elif isinstance(exc, (DjangoPermissionDenied,)):
        status, code, message, details = 403, "forbidden", "Permission denied.", {}
    elif isinstance(exc, DjangoValidationError):
        status, code, message = 400, "validation_error", "The request is not valid."
        details = {"errors": exc.messages}
    elif isinstance(exc, RequestDataTooBig):
        status, code, message, details = 413, "too_large", "The request body is too large.", {}
    elif isinstance(exc, SuspiciousOperation):
        status, code, message, details = 400, "bad_request", str(exc), {}
    elif isinstance(exc, drf.APIException):
        status = exc.status_code
        code = next((c for t, c in _DRF_CODES.items() if isinstance(exc, t)), "error")
        message, details = _drf_message(exc), _drf_details(exc)
        if isinstance(exc, drf.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait + 0.999))
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
    else:
        return None  # a real bug: let Django log it and answer 500
    if status == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return Response(error_body(code, message, details), status=status, headers=headers)
