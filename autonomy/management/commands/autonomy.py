"""manage.py autonomy run --tenant T [--dry-run] [--wait] | sweep"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import get_tenant_model, schema_context


class Command(BaseCommand):
    help = "Trigger an improvement run for a tenant (or sweep stalled runs and expired approvals)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="queue a run")
        run.add_argument("--tenant", required=True, help="tenant schema name")
        run.add_argument("--dry-run", action="store_true")
        run.add_argument("--wait", type=float, default=0, help="seconds to wait for the run to finish")
        sweep = sub.add_parser("sweep", help="expire approvals and resume stalled runs in every tenant")
        sweep.add_argument("--stale-seconds", type=float, default=120)

    def handle(self, *args, action, **options):
        if action == "sweep":
            from autonomy.tasks import sweep_task

            self.stdout.write(str(sweep_task(stale_seconds=options["stale_seconds"])))
            return
        from autonomy.models import ImprovementRun
        from autonomy.services import run_create

        tenant = get_tenant_model().objects.filter(schema_name=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {options['tenant']!r}")
        with schema_context(tenant.schema_name):
            run = run_create(tenant=tenant, trigger="command", dry_run=options["dry_run"])
            self.stdout.write(f"run {run.pk} {run.state}/{run.phase}")
            deadline = time.monotonic() + options["wait"]
            while time.monotonic() < deadline and run.state not in ("done", "stopped", "failed"):
                time.sleep(0.2)
                run = ImprovementRun.objects.get(pk=run.pk)
            if options["wait"]:
                self.stdout.write(f"run {run.pk} {run.state}/{run.phase} {run.stop_reason}")
