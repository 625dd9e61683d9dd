"""manage.py knn_build --tenant T --model ID|NAME: a kNN-LM datastore over the tenant's text atoms."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from atoms.management.commands._tenant import activate_tenant
from hartonomous.errors import ApplicationError
from hartonomous.progress import Progress

from ...knn import knn_datastore_build
from ...models import Model
from ...selectors import model_by_ref


def find_model(ref: str) -> Model:
    model = model_by_ref(ref)
    if model is None:
        raise CommandError(f"No model {ref!r} in this tenant.")
    return model


class Command(BaseCommand):
    help = "Build a kNN-LM datastore (context -> next token) of a decoder model over the tenant's text atoms."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--model", required=True, help="Model id or name")
        parser.add_argument("--max-atoms", type=int, default=5000)
        parser.add_argument("--max-tokens", type=int, default=200_000)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, tenant, model, max_atoms, max_tokens, no_progress, **options):
        if max_atoms < 1 or max_tokens < 2:
            raise CommandError("--max-atoms and --max-tokens must be positive.")
        tenant_obj = activate_tenant(tenant)
        found = find_model(model)
        try:
            with Progress(tenant_obj.schema_name, "knn_build", total=None, bar=not no_progress, unit="tok") as bar:
                atom = knn_datastore_build(tenant=tenant_obj, model=found, max_atoms=max_atoms,
                                           max_tokens=max_tokens, progress=bar.advance)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from None
        finally:
            connection.set_tenant(tenant_obj)
        m = atom.metadata
        self.stdout.write(f"datastore atom {atom.pk} ({atom.sha256[:12]}): {m['entries']} entries from {m['atoms']} "
                          f"atoms, {m['tokens']} tokens, {atom.size} bytes")
