from datetime import timedelta

SCHEDULE = {
    "provenance-replicate": {"task": "provenance.replicate_all", "schedule": timedelta(seconds=5)},
}
