"""Hartonomous: settings, URLs, ASGI, Celery app and the CLI that runs the embedded stack."""
