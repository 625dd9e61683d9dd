"""Queue every provenance node and edge of a tenant for the replica again (idempotent MERGEs)."""
from django.core.management.base import BaseCommand

from provenance.outbox import outbox_resync
from provenance.replica import replicate_tenant

from ._tenants import tenants_for


class Command(BaseCommand):
    help = "Queue a tenant's whole provenance graph for the replica (after pruning, or a new replica)."

    def add_arguments(self, parser):
        parser.add_argument("--schema", required=True)
        parser.add_argument("--now", action="store_true", help="Replicate now instead of waiting for the task")

    def handle(self, *args, schema, now=False, **options):
        tenant = tenants_for(schema)[0]
        self.stdout.write(f"{schema}: {outbox_resync(tenant=tenant)} node/edge event(s) queued")
        if now:
            self.stdout.write(f"{schema}: {replicate_tenant(schema=schema)} event(s) replicated")
