"""Concept tasks: thin wrappers that run a service inside the tenant's schema."""
from __future__ import annotations

from celery import shared_task
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

from hartonomous.progress import Progress

from .services import JOB


@shared_task(name="concepts.discover", acks_late=True)
def discover_concepts_task(schema: str, trigger: str = "schedule") -> dict:
    """Discovery for one tenant, then binding of the concepts it found."""
    from django.db import connection

    from .binding import concepts_bind
    from .services import concepts_discover

    with schema_context(schema), Progress(schema, JOB, bar=False) as progress:
        run = concepts_discover(tenant=connection.tenant, trigger=trigger, progress=progress)
        bound = concepts_bind(tenant=connection.tenant) if run.state == "done" else None
    return {"run": run.pk, "state": run.state, "k": run.k, "born": run.born, "died": run.died,
            "merged": run.merged, "edges": bound.edges if bound else 0}


@shared_task(name="concepts.discover_all", acks_late=True)
def discover_all_task() -> list[str]:
    """Beat (hourly): queue one discovery per tenant."""
    schemas = list(get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
                   .values_list("schema_name", flat=True))
    for schema in schemas:
        discover_concepts_task.delay(schema, "schedule")
    return schemas
