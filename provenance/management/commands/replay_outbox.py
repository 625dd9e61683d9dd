"""Queue a tenant's outbox again from a position (and optionally replicate now)."""
from django.core.management.base import BaseCommand
from django_tenants.utils import schema_context

from provenance.replica import replicate_tenant
from provenance.services import outbox_replay_from

from ._tenants import tenants_for


class Command(BaseCommand):
    help = "Mark outbox events from --position on as unsent (dead letters included) so they replicate again."

    def add_arguments(self, parser):
        parser.add_argument("--schema", required=True)
        parser.add_argument("--position", type=int, default=1, help="First outbox event id to replay")
        parser.add_argument("--now", action="store_true", help="Replicate now instead of waiting for the task")

    def handle(self, *args, schema, position, now=False, **options):
        tenant = tenants_for(schema)[0]
        with schema_context(tenant.schema_name):
            count = outbox_replay_from(tenant=tenant, position=position)
        self.stdout.write(f"{schema}: {count} event(s) queued again from position {position}")
        if now:
            self.stdout.write(f"{schema}: {replicate_tenant(schema=schema)} event(s) replicated")
