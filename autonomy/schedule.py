"""Periodic autonomy work (merged into CELERY_BEAT_SCHEDULE by settings)."""
from datetime import timedelta

SCHEDULE = {
    "autonomy-trigger-all": {"task": "autonomy.trigger_all", "schedule": timedelta(hours=6)},
    "autonomy-sweep": {"task": "autonomy.sweep", "schedule": timedelta(minutes=2)},
}
