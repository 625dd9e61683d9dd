from celery import shared_task

from .replica import ReplicaUnavailable, replica_uri, replicate_tenant, tenant_schemas


@shared_task(name="provenance.replicate", acks_late=True, autoretry_for=(ReplicaUnavailable,), retry_backoff=2,
             retry_backoff_max=300, retry_jitter=True, max_retries=None)
def replicate_task(schema: str) -> int:
    """Drain one tenant's outbox to the replica; an unreachable replica retries with exponential backoff."""
    return replicate_tenant(schema=schema, max_batches=200)


@shared_task(name="provenance.replicate_all", acks_late=True)
def replicate_all_task() -> int:
    if not replica_uri():
        return 0
    schemas = tenant_schemas()
    for schema in schemas:
        replicate_task.delay(schema)
    return len(schemas)
