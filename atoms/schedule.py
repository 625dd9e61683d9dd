"""Periodic atom-store work (merged into CELERY_BEAT_SCHEDULE by settings)."""
from datetime import timedelta

SCHEDULE = {
    "atoms-embed-missing": {"task": "atoms.embed_missing", "schedule": timedelta(minutes=10)},
    "atoms-index-missing": {"task": "atoms.index_missing", "schedule": timedelta(minutes=10)},
    "atoms-gc-blobs": {"task": "atoms.gc_blobs", "schedule": timedelta(hours=6)},
}
