"""Compare node and edge counts per tenant between PostgreSQL and the graph replica."""
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from provenance.models import ProvEdge, ProvNode
from provenance.replica import ReplicaUnavailable, replica_counts, replica_lag

from ._tenants import tenants_for


class Command(BaseCommand):
    help = "Compare per-tenant node/edge counts in PostgreSQL with the Neo4j replica (exit 1 on a difference)."

    def add_arguments(self, parser):
        parser.add_argument("--schema", help="Only this tenant schema")

    def handle(self, *args, schema=None, **options):
        differ = []
        for tenant in tenants_for(schema):
            with schema_context(tenant.schema_name):
                pg = {"nodes": ProvNode.objects.count(), "edges": ProvEdge.objects.count()}
            try:
                replica = replica_counts(schema=tenant.schema_name)
            except ReplicaUnavailable as exc:
                raise CommandError(f"replica unavailable: {exc}") from exc
            lag = replica_lag(schema=tenant.schema_name)
            same = pg == replica
            if not same:
                differ.append(tenant.schema_name)
            self.stdout.write(f"{tenant.schema_name}: postgres {pg['nodes']} nodes / {pg['edges']} edges, replica "
                              f"{replica['nodes']} / {replica['edges']}, {lag['pending']} pending"
                              f" -> {'same' if same else 'DIFFERENT'}")
        if differ:
            raise CommandError(f"replica differs for: {', '.join(differ)}")
