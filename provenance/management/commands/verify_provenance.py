"""Recompute every tenant's provenance hash chain; report the first break (exit status 1 if any)."""
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from provenance.ledger import ledger_inclusion_proof, ledger_verify

from ._tenants import tenants_for


class Command(BaseCommand):
    help = "Verify the tamper-evident provenance ledger of each tenant (or --schema)."

    def add_arguments(self, parser):
        parser.add_argument("--schema", help="Only this tenant schema")
        parser.add_argument("--proof", type=int, metavar="SEQ", help="Also print a Merkle inclusion proof for SEQ")

    def handle(self, *args, schema=None, proof=None, **options):
        broken = []
        for tenant in tenants_for(schema):
            with schema_context(tenant.schema_name):
                checked, first_break = ledger_verify()
                if first_break is None:
                    self.stdout.write(f"{tenant.schema_name}: ok ({checked} records)")
                else:
                    broken.append(tenant.schema_name)
                    self.stdout.write(f"{tenant.schema_name}: BROKEN at seq {first_break.seq}: {first_break.reason} "
                                      f"({checked} records verified before it)")
                if proof is not None:
                    import json

                    self.stdout.write(json.dumps(ledger_inclusion_proof(seq=proof)))
        if broken:
            raise CommandError(f"provenance ledger broken in: {', '.join(broken)}")
