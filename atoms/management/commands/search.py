"""manage.py search "query" --tenant T [-k 10] [--modality text,code]."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from hartonomous.errors import ApplicationError

from ...search import SearchQuery, atom_search
from ...selectors import AtomFilters
from ._tenant import activate_tenant


class Command(BaseCommand):
    help = "Hybrid search over a tenant's atoms."

    def add_arguments(self, parser):
        parser.add_argument("query")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("-k", type=int, default=10)
        parser.add_argument("--modality", default="")

    def handle(self, *args, query, tenant, k, modality, **options):
        activate_tenant(tenant)
        if k <= 0 or k > 1000:
            raise CommandError("-k must be between 1 and 1000")
        filters = AtomFilters(modality=[m for m in modality.split(",") if m])
        try:
            hits = atom_search(SearchQuery(text=query, k=k, filters=filters))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        for rank, hit in enumerate(hits, start=1):
            snippet = (hit.atom.text or hit.atom.metadata.get("name", "")).replace("\n", " ")[:100]
            self.stdout.write(f"{rank:>3}. {hit.score:.4f} #{hit.atom.pk} [{hit.atom.modality}] {snippet}")
            self.stdout.write(f"       why: {hit.why}")
