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


@shared_task(name="provenance.record_ingest", acks_late=True)
def record_ingest_task(schema: str, root_id: int | None, new_ids: list[int], source_kind: str,
                       source_uri: str) -> int:
    """A large ingest's provenance, recorded off the ingest's critical path."""
    from django_tenants.utils import schema_context

    from atoms.models import Atom
    from tenants.models import Tenant

    from .receivers import record_ingest

    tenant = Tenant.objects.get(schema_name=schema)
    with schema_context(schema):
        root = Atom.objects.filter(pk=root_id).first() if root_id else None
    record_ingest(tenant=tenant, root=root, new_ids=new_ids, source_kind=source_kind, source_uri=source_uri)
    return len(new_ids)


@shared_task(name="provenance.reap_generations", acks_late=True)
def reap_generations_task() -> dict[str, list[int]]:
    """Beat: close generation runs left running (see atomicstream.generation_runs_reap), every tenant."""
    from tenants.models import Tenant

    from .atomicstream import generation_runs_reap

    closed = {}
    for tenant in Tenant.objects.filter(schema_name__in=tenant_schemas()):
        if reaped := generation_runs_reap(tenant=tenant):
            closed[tenant.schema_name] = reaped
    return closed


@shared_task(name="provenance.prune_outbox", acks_late=True)
def prune_outbox_task() -> dict[str, int]:
    """Beat (daily): keep every tenant's outbox bounded (see provenance/outbox.py)."""
    from tenants.models import Tenant

    from .outbox import outbox_prune

    return {t.schema_name: outbox_prune(tenant=t) for t in Tenant.objects.filter(schema_name__in=tenant_schemas())}
