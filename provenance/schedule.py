from datetime import timedelta

SCHEDULE = {
    "provenance-replicate": {"task": "provenance.replicate_all", "schedule": timedelta(seconds=5)},
    "provenance-prune-outbox": {"task": "provenance.prune_outbox", "schedule": timedelta(days=1)},
    "provenance-reap-generations": {"task": "provenance.reap_generations", "schedule": timedelta(minutes=10)},
}
