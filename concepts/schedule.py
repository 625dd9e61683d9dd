"""Periodic concept work (merged into CELERY_BEAT_SCHEDULE by settings)."""
from datetime import timedelta

SCHEDULE = {
    "concepts-discover-hourly": {"task": "concepts.discover_all", "schedule": timedelta(hours=1)},
}
