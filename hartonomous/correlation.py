"""Correlation ids: accepted from or returned in X-Correlation-ID, present in every log line and task."""
from __future__ import annotations

import contextvars
import logging
import re
import uuid

HEADER = "X-Correlation-ID"
_META_KEY = "HTTP_X_CORRELATION_ID"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_current: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")


def get() -> str:
    return _current.get()


def set_id(value: str) -> contextvars.Token:
    return _current.set(value)


def reset(token: contextvars.Token) -> None:
    _current.reset(token)


def new_id() -> str:
    return uuid.uuid4().hex


def accept(candidate: str | None) -> str:
    """Use the caller's id when it is sane; otherwise make one."""
    if candidate and _VALID.match(candidate):
        return candidate
    return new_id()


class CorrelationIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        correlation_id = accept(request.META.get(_META_KEY))
        request.correlation_id = correlation_id
        token = set_id(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            reset(token)
        response[HEADER] = correlation_id
        return response


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = get()
        return True
