"""Hartonomous: settings, URLs, ASGI, Celery app and the CLI that runs the embedded stack."""
from .celery import app as celery_app

__all__ = ["celery_app"]
