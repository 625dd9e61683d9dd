from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from hartonomous.progress import Progress
from tenants.selectors import tenant_by_slug

from ...services import JOB, DiscoveryConfig, concepts_discover, embedding_models


class Command(BaseCommand):
    help = "Discover concepts now for one tenant (k-means per embedding model), then bind them."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug (schema name)")
        parser.add_argument("--full", action="store_true", help="recluster everything (no incremental pass)")
        parser.add_argument("--k-max", type=int, default=None)
        parser.add_argument("--no-bind", action="store_true", help="skip the co-occurrence binding")

    def handle(self, *args, tenant, full, k_max, no_bind, **options):
        from ...binding import concepts_bind

        t = tenant_by_slug(slug=tenant)
        if t is None:
            raise CommandError(f"No active tenant {tenant!r}.")
        connection.set_tenant(t)
        cfg = DiscoveryConfig(force_full=full)
        if k_max is not None:
            cfg.k_max = k_max
        try:
            with Progress(t.schema_name, JOB, total=2 * len(embedding_models()), unit="step") as progress:
                run = concepts_discover(tenant=t, trigger="manual", config=cfg, progress=progress)
        except Exception as exc:
            raise CommandError(f"discovery failed (previous concepts kept): {exc}") from exc
        self.stdout.write(f"run {run.pk} {run.state}: {run.k} live concepts, born {run.born}, died {run.died}, "
                          f"merged {run.merged}, atoms assigned {run.atoms_assigned}")
        for model, outcome in sorted(run.outcome.items()):
            self.stdout.write(f"  {model}: {outcome}")
        if run.state == "done" and not no_bind:
            bound = concepts_bind(tenant=t)
            self.stdout.write(f"binding: {bound.edges} edge(s) over {bound.contexts} context(s)")
